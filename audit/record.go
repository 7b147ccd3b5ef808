package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"regionfl/identity"
)

// Action names what a record attests. The set is closed: Log.Append refuses
// any other value, so a typo in the coordinator cannot produce records an
// auditor has never heard of. New actions are added here, never renamed.
type Action string

// Actions.
const (
	// Region set-up and the threshold key ceremony.
	ActionRegionCreated    Action = "region.created"
	ActionCeremonyEnrolled Action = "ceremony.enrolled" // a hospital enrolled in the ceremony
	// Retired with the ceremony's collective public key; the logs of
	// regions made before it hold them.
	ActionCeremonyPublicKeyShare Action = "ceremony.public_key_share" // a hospital's public key share accepted
	ActionCeremonyPublicKey      Action = "ceremony.public_key"       // the collective public key fixed
	ActionCeremonySealedShares   Action = "ceremony.sealed_shares"    // a hospital's sealed secret shares stored
	ActionCeremonyKeyReady       Action = "ceremony.key_ready"        // the region key is usable
	ActionCeremonyEpochStarted   Action = "ceremony.epoch_started"    // a re-key: the ceremony of a new key epoch began
	// A re-key's members fixed: the hospitals enrolled by then; the others
	// sit the key epoch out.
	ActionCeremonyEnrollmentClosed Action = "ceremony.enrollment_closed"

	// Jobs. job.accepted and job.refused are per hospital (Hospital set).
	ActionJobSubmitted Action = "job.submitted"
	ActionJobAccepted  Action = "job.accepted"
	ActionJobRefused   Action = "job.refused"
	ActionJobCancelled Action = "job.cancelled"
	ActionJobEnded     Action = "job.ended"

	// Rounds.
	ActionRoundOpened  Action = "round.opened"
	ActionRoundClosed  Action = "round.closed"
	ActionRoundAborted Action = "round.aborted"

	// Contributions and decryption; Digest and Size describe the update.
	ActionContributionAccepted Action = "contribution.accepted"
	ActionDecryptionShareGiven Action = "decryption_share.given"
	ActionDecryptionRetried    Action = "decryption.retried"
	ActionContributorsApproved Action = "contributors.approved" // a contributor signed the round's contributor set

	// A model version committed; ModelHash is its hash.
	ActionModelCommitted Action = "model.committed"

	// Membership, certificates, authorization.
	ActionReplicaJoined      Action = "replica.joined"
	ActionReplicaRemoved     Action = "replica.removed"
	ActionCertificateIssued  Action = "certificate.issued"
	ActionCertificateRevoked Action = "certificate.revoked"
	ActionAuthzRefused       Action = "authz.refused"
	ActionWebSessionsEnded   Action = "web.sessions_ended" // an identity's web-view sessions ended
	// An operator's signed, dated list of every revoked serial (what
	// hospitals hold against a coordinator withholding a revocation).
	ActionRevocationListPublished Action = "revocation_list.published"
)

// Actions lists every action Log.Append accepts.
var Actions = []Action{
	ActionRegionCreated, ActionCeremonyEnrolled, ActionCeremonyPublicKeyShare,
	ActionCeremonyPublicKey, ActionCeremonySealedShares, ActionCeremonyKeyReady, ActionCeremonyEpochStarted,
	ActionCeremonyEnrollmentClosed,
	ActionJobSubmitted, ActionJobAccepted, ActionJobRefused, ActionJobCancelled, ActionJobEnded,
	ActionRoundOpened, ActionRoundClosed, ActionRoundAborted,
	ActionContributionAccepted, ActionDecryptionShareGiven, ActionDecryptionRetried, ActionContributorsApproved,
	ActionModelCommitted,
	ActionReplicaJoined, ActionReplicaRemoved, ActionCertificateIssued, ActionCertificateRevoked,
	ActionAuthzRefused, ActionWebSessionsEnded, ActionRevocationListPublished,
}

// Known reports whether a is one of Actions.
func (a Action) Known() bool { return slices.Contains(Actions, a) }

// actionRE is the syntax of any action, known or not: a verifier built
// before an action was added still checks records that carry it.
var actionRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$`)

// Limits on a record, so that one always fits a 1 MiB export line.
const (
	MaxFieldBytes = 4096 // any string field but a Details value
	// MaxDetailBytes bounds a Details value: a list of a region's
	// hospitals (contributors, members), up to 1,024 names of at most 63
	// bytes and their commas.
	MaxDetailBytes  = 64 << 10
	MaxDetails      = 32        // entries in Details
	MaxDetailKey    = 64        // bytes in a Details key
	MaxRecordBytes  = 256 << 10 // the canonical encoding of a record
	recordTag       = "regionfl/audit/record/v1"
	zeroHashHex     = "0000000000000000000000000000000000000000000000000000000000000000"
	noPrevJobRecord = int64(-1)
)

// Record is one audit log entry. Seq, PrevHash and PrevJobSeq are filled in
// by Log.Append; everything else comes from the Raft command that performed
// the action, in the same log entry.
//
// The JSON form (field order and names below, omitempty as tagged, Details
// keys sorted, as encoding/json writes it) is what export files carry; an
// export verifier refuses a record whose JSON is not exactly that form. The
// hash of a record is not taken over JSON but over the binary encoding
// documented at Record.Encode.
type Record struct {
	// Seq is the record's position in the log, from 0; it is also its leaf
	// index in the Merkle tree.
	Seq uint64 `json:"seq"`
	// PrevHash is the hex leaf hash of record Seq-1, all zeros for Seq 0.
	PrevHash string `json:"prev_hash"`
	// TimeUnixMs is the time carried by the Raft command (never a replica's
	// clock), raised to the previous record's time if it is earlier so that
	// the log is ordered by time as well as by Seq.
	TimeUnixMs int64 `json:"time_unix_ms"`
	// Actor and Role are the certificate identity that caused the action
	// (the URI SAN regionfl://ROLE/NAME); a replica acting on its own, e.g.
	// on a timeout, is Role coordinator.
	Actor string `json:"actor"`
	Role  string `json:"role"`
	// Action is what happened.
	Action Action `json:"action"`
	// JobID is set for job-scoped actions.
	JobID string `json:"job_id,omitempty"`
	// PrevJobSeq is the Seq of the previous record with the same JobID, or
	// -1 if this is the job's first record or JobID is empty. It makes a
	// job's records a linked list each of whose links is in the tree, so an
	// export of one job can be checked for omissions.
	PrevJobSeq int64  `json:"prev_job_seq"`
	Round      uint32 `json:"round,omitempty"`
	Hospital   string `json:"hospital,omitempty"`
	// Purpose and LegalBasis are the job's, copied into each of its records
	// (e.g. a data permit ID).
	Purpose    string `json:"purpose,omitempty"`
	LegalBasis string `json:"legal_basis,omitempty"`
	// Digest and Size describe an accepted contribution.
	Digest string `json:"digest,omitempty"`
	Size   uint64 `json:"size,omitempty"`
	// ModelHash is the hash of a committed model version.
	ModelHash string `json:"model_hash,omitempty"`
	// Reason explains a refusal, cancellation or abort.
	Reason  string            `json:"reason,omitempty"`
	Details map[string]string `json:"details,omitempty"`
}

// ErrInvalidRecord is wrapped by every record validation failure.
var ErrInvalidRecord = errors.New("audit: invalid record")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidRecord}, args...)...)
}

func checkText(name, s string) error { return checkTextMax(name, s, MaxFieldBytes) }

func checkTextMax(name, s string, max int) error {
	if len(s) > max {
		return invalid("%s: %d bytes (at most %d)", name, len(s), max)
	}
	if !utf8.ValidString(s) {
		return invalid("%s: not valid UTF-8", name)
	}
	return nil
}

// Validate checks a record's syntax: field lengths and encodings, the
// identity, the action's spelling (any action, known or not), the links'
// ranges. It does not check the links against a log.
func (r *Record) Validate() error {
	if _, err := ParseHash(r.PrevHash); err != nil {
		return invalid("prev_hash: %v", err)
	}
	if r.Seq == 0 && r.PrevHash != zeroHashHex {
		return invalid("prev_hash of record 0 must be all zeros")
	}
	if r.TimeUnixMs <= 0 {
		return invalid("time_unix_ms %d is not positive", r.TimeUnixMs)
	}
	if err := identity.ValidName(r.Actor); err != nil {
		return invalid("actor: %v", err)
	}
	if _, err := identity.ParseRole(r.Role); err != nil {
		return invalid("role: %v", err)
	}
	if len(r.Action) > 64 || !actionRE.MatchString(string(r.Action)) {
		return invalid("action %.80q: want lowercase dotted words like job.submitted", r.Action)
	}
	switch {
	case r.PrevJobSeq < noPrevJobRecord:
		return invalid("prev_job_seq %d is below -1", r.PrevJobSeq)
	case r.JobID == "" && r.PrevJobSeq != noPrevJobRecord:
		return invalid("prev_job_seq %d on a record without job_id", r.PrevJobSeq)
	case r.PrevJobSeq >= 0 && uint64(r.PrevJobSeq) >= r.Seq:
		return invalid("prev_job_seq %d is not before seq %d", r.PrevJobSeq, r.Seq)
	}
	for _, f := range []struct{ name, v string }{
		{"job_id", r.JobID}, {"hospital", r.Hospital}, {"purpose", r.Purpose},
		{"legal_basis", r.LegalBasis}, {"digest", r.Digest}, {"model_hash", r.ModelHash},
		{"reason", r.Reason},
	} {
		if err := checkText(f.name, f.v); err != nil {
			return err
		}
	}
	if len(r.Details) > MaxDetails {
		return invalid("details: %d entries (at most %d)", len(r.Details), MaxDetails)
	}
	for k, v := range r.Details {
		if k == "" || len(k) > MaxDetailKey {
			return invalid("details key %.80q: want 1 to %d bytes", k, MaxDetailKey)
		}
		if err := checkText("details key", k); err != nil {
			return err
		}
		if err := checkTextMax("details["+k+"]", v, MaxDetailBytes); err != nil {
			return err
		}
	}
	if n := r.encodedLen(); n > MaxRecordBytes {
		return invalid("encoded record is %d bytes (at most %d)", n, MaxRecordBytes)
	}
	return nil
}

func (r *Record) encodedLen() int {
	n := 4 + len(recordTag) + 8 + 32 + 8 + 8 + 4 + 8 + 4
	for _, s := range []string{r.Actor, r.Role, string(r.Action), r.JobID, r.Hospital,
		r.Purpose, r.LegalBasis, r.Digest, r.ModelHash, r.Reason} {
		n += 4 + len(s)
	}
	for k, v := range r.Details {
		n += 8 + len(k) + len(v)
	}
	return n
}

// Encode returns the canonical binary encoding of a valid record, the
// data its Merkle leaf hash is taken over (leaf hash = SHA-256(0x00 ||
// Encode())). All integers are big-endian; a string is its byte length as
// uint32 followed by its bytes:
//
//	string "regionfl/audit/record/v1"
//	uint64 seq
//	[32]byte prev_hash (decoded from hex)
//	int64  time_unix_ms
//	string actor, role, action, job_id
//	int64  prev_job_seq
//	uint32 round
//	string hospital, purpose, legal_basis, digest
//	uint64 size
//	string model_hash, reason
//	uint32 number of details, then per entry in increasing byte order of
//	       the key: string key, string value
//
// Absent optional fields encode as empty strings and zeros, as in JSON,
// where omitempty drops exactly those values.
func (r *Record) Encode() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r.encode(), nil
}

// encode assumes r is valid.
func (r *Record) encode() []byte {
	b := make([]byte, 0, r.encodedLen())
	str := func(s string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	str(recordTag)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	prev, _ := ParseHash(r.PrevHash)
	b = append(b, prev[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.TimeUnixMs))
	str(r.Actor)
	str(r.Role)
	str(string(r.Action))
	str(r.JobID)
	b = binary.BigEndian.AppendUint64(b, uint64(r.PrevJobSeq))
	b = binary.BigEndian.AppendUint32(b, r.Round)
	str(r.Hospital)
	str(r.Purpose)
	str(r.LegalBasis)
	str(r.Digest)
	b = binary.BigEndian.AppendUint64(b, r.Size)
	str(r.ModelHash)
	str(r.Reason)
	keys := make([]string, 0, len(r.Details))
	for k := range r.Details {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, strings.Compare)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		str(k)
		str(r.Details[k])
	}
	return b
}

// LeafHash is the record's Merkle leaf hash, SHA-256(0x00 || Encode()).
func (r *Record) LeafHash() (Hash, error) {
	b, err := r.Encode()
	if err != nil {
		return Hash{}, err
	}
	return HashLeaf(b), nil
}

func (r Record) clone() Record {
	if r.Details != nil {
		d := make(map[string]string, len(r.Details))
		for k, v := range r.Details {
			d[k] = v
		}
		r.Details = d
	}
	return r
}
