// Software-defined block storage for Pulumi: storage profiles, volumes, attachments and replication pairs, managed by an embedded controller (scheduler, file driver, iSCSI/NBD export) and `sds-agent` daemons on hosts.
package sds
