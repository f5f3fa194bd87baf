/**
 * The PostgreSQL migrations are SQLite's list in another dialect: the same versions, in the same
 * order, with the same names, so a state's `schema_migrations` means the same on either store.
 */
import { migrations } from "../../provider/src/store/migrations";
import { postgresMigrations } from "../../provider/src/store/postgres-migrations";

test("PostgreSQL and SQLite migrations go in lockstep: same versions, same names", () => {
  expect(postgresMigrations.map((m) => [m.version, m.name])).toEqual(migrations.map((m) => [m.version, m.name]));
});
