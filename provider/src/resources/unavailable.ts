/**
 * Resources and functions of the contract whose issues have not landed: every call answers
 * a clear "not available yet" error instead of pretending.
 */
import { notAvailableYet } from "../errors";
import type { CheckResult, FunctionHandler, ResourceHandler } from "./resource";

export class UnavailableResource implements ResourceHandler {
  constructor(readonly token: string, private readonly why: string) {}
  private fail(): never {
    throw notAvailableYet(`${this.token} (${this.why})`);
  }
  async check(): Promise<CheckResult> {
    return { inputs: {}, failures: [{ property: "", reason: notAvailableYet(`${this.token} (${this.why})`).message }] };
  }
  diff = async () => this.fail();
  create = async () => this.fail();
  read = async () => this.fail();
  update = async () => this.fail();
  // Nothing of this type can exist, so deleting one is deleting what is gone.
  delete = async () => undefined;
}

export class UnavailableFunction implements FunctionHandler {
  constructor(readonly token: string, private readonly why: string) {}
  async invoke(): Promise<never> {
    throw notAvailableYet(`${this.token} (${this.why})`);
  }
}
