// Package audit is the coordinator's tamper-evident round log, and the
// offline verifier compliance officers run on an export of it.
//
// # The log
//
// Every action the coordinator takes (region and key ceremony steps, job
// decisions, rounds, contributions, decryption shares, committed models,
// membership and certificate changes, authorization refusals) is a Record,
// appended to a Log by the Raft state machine in the same entry as the
// action. A record carries its sequence number, the hash of the previous
// record, the time from the Raft command, the actor's certificate identity
// and role, and the job's purpose and legal basis. Log is deterministic, so
// all replicas hold the same log; MarshalJSON and UnmarshalJSON are its
// snapshot form, and restoring rehashes and rechecks everything.
//
// The records are the leaves of a Merkle tree built exactly as in
// Certificate Transparency (RFC 9162 §2.1): leaf hash SHA-256(0x00 ||
// Record.Encode()), node hash SHA-256(0x01 || left || right), with
// inclusion and consistency proofs and their verification algorithms as in
// §2.1.3 and §2.1.4. A second, small Merkle tree, the job index, maps each
// job to its last record, so that an export of one job can prove it ends
// where it ends.
//
// # Tree heads
//
// A TreeHead signs (size, log root, job index root, time) with a
// coordinator replica's TLS key (ECDSA P-256 in regionfl, see identity).
// The leader signs one every so many records and commits it through Raft
// (Log.AddCheckpoint); an exporter signs a fresh one for each export
// (Log.SignHead). VerifyTreeHead checks the signature, that the certificate
// names a coordinator and, given the region CA, that the CA issued it.
//
// # Export and verification
//
// Export writes a JSON Lines file (format at Export) holding the records a
// Filter selects (all, one job, a time window, or both), each with its
// inclusion proof against the final signed head; the boundary records just
// outside the selection; the job index proof for a job filter; the
// checkpoints with consistency proofs to the final head; and the final head.
// Verify checks such a file offline and names the first bad line:
//
//   - an edited record: its leaf hash changes and its inclusion proof no
//     longer leads to the signed root (a record must also be in canonical
//     JSON, so no byte of it can change unnoticed);
//   - a deleted record: in an unfiltered or time-window export the seqs
//     stop being consecutive; in a job export the next record's
//     prev_job_seq (which is in the signed tree) names the missing one;
//   - reordered records: seqs and times must increase, and the links above
//     must hold;
//   - a cut tail: the head line is missing, or the last record is not the
//     signed log's last (seq size-1), not the job's last per the signed job
//     index, and not a boundary record after the window;
//   - a cut head: the first record must be seq 0 (or the job's first, with
//     prev_job_seq -1), or follow a boundary record before the window;
//   - a bad signature on the head or a checkpoint, a signer that is not a
//     coordinator or (with a CA) not issued by the CA;
//   - a checkpoint the final head does not extend (consistency proof).
//
// Time windows are sound because Log.Append keeps times non-decreasing, so
// a window is a contiguous range of the log (and of a job's records), and
// the boundary records prove where it starts and ends.
//
// What the verifier cannot see: the filter is in the unsigned header, so
// the auditor must check Report.Filter is the one asked for; a coordinator
// key holder can sign any log it likes (checkpoints held by others, checked
// for consistency, are what catch a rewritten history); and certificate
// revocation is not checked.
package audit
