/**
 * What a host needs to reach an exported volume (os-brick's connection properties), one shape
 * per protocol. The export is made per connector before this exists (createExport, then
 * initializeConnection); a hypervisor with `connect: false` gets exactly this.
 */

/** iSCSI: a target on a portal, the volume's LUN, and CHAP when the backend asks for it. */
export interface IscsiConnectionInfo {
  protocol: "iscsi";
  portals: string[];
  targetIqn?: string;
  targetLun?: number;
  exportName?: undefined;
  authMethod?: "CHAP";
  authUsername?: string;
  /** In clear here: callers that hand it out wrap it as a secret; it is never logged. */
  authPassword?: string;
  readOnly: boolean;
}

/** NBD: a server `host:port` and the volume's export name on it. */
export interface NbdConnectionInfo {
  protocol: "nbd";
  portals: string[];
  exportName?: string;
  targetIqn?: undefined;
  targetLun?: undefined;
  authMethod?: undefined;
  authUsername?: undefined;
  authPassword?: undefined;
  readOnly: boolean;
}

/** local: the volume file itself, on the machine running the provider (no portal). */
export interface LocalConnectionInfo {
  protocol: "local";
  portals: string[];
  /** The volume file. */
  exportName?: string;
  targetIqn?: undefined;
  targetLun?: undefined;
  authMethod?: undefined;
  authUsername?: undefined;
  authPassword?: undefined;
  readOnly: boolean;
}

export type ConnectionInfo = IscsiConnectionInfo | NbdConnectionInfo | LocalConnectionInfo;

export type Protocol = ConnectionInfo["protocol"];
