/**
 * The connector of a protocol (os-brick's InitiatorConnector.factory). Kernel or userspace is
 * decided by the probe (records.ts `probe`) unless `options.mode` forces one.
 */
import type { Connector } from "./connector";
import { IscsiConnector, type IscsiConnectorOptions } from "./iscsi-connector";
import { LocalConnector } from "./local-connector";
import { NbdConnector } from "./nbd-connector";

export type ConnectorFactoryOptions = IscsiConnectorOptions;

export function connectorFor(protocol: "iscsi" | "nbd" | "local", options: ConnectorFactoryOptions = {}): Connector {
  switch (protocol) {
    case "iscsi":
      return new IscsiConnector(options);
    case "nbd":
      return new NbdConnector(options);
    case "local":
      return new LocalConnector(options);
    default:
      throw new Error(`sds internal error: no connector for protocol ${String(protocol)}`);
  }
}
