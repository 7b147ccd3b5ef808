package audit

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Log is the append-only audit log the coordinator's Raft state machine
// holds. Everything it does is deterministic (no clock, no randomness, no
// signatures), so every replica holds the same log and the same tree.
//
// The zero Log is empty and ready to use. A Log is safe for concurrent use;
// hold it by pointer. Records below a given size never change, so an
// exporter may read them while the state machine appends.
type Log struct {
	mu          sync.RWMutex
	records     []Record
	tree        tree
	jobs        map[string]uint64 // job ID → seq of its last record
	checkpoints []TreeHead
}

// Len is the number of records, the size of the current tree.
func (l *Log) Len() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return uint64(len(l.records))
}

// Append adds a record for an action. It sets Seq, PrevHash and
// PrevJobSeq (values given in r are ignored), raises TimeUnixMs to the
// previous record's time if it is earlier, and refuses a record that is
// invalid or whose Action is not one of Actions. It returns the record as
// stored. The state machine calls it while applying the entry that performs
// the action; a refusal changes nothing and should fail that command.
func (l *Log) Append(r Record) (Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !r.Action.Known() {
		return Record{}, invalid("unknown action %.80q", r.Action)
	}
	if r.TimeUnixMs <= 0 {
		return Record{}, invalid("time_unix_ms %d is not positive", r.TimeUnixMs)
	}
	r = r.clone()
	n := len(l.records)
	r.Seq = uint64(n)
	r.PrevHash = zeroHashHex
	if n > 0 {
		r.PrevHash = l.tree.levels[0][n-1].String()
		r.TimeUnixMs = max(r.TimeUnixMs, l.records[n-1].TimeUnixMs)
	}
	r.PrevJobSeq = noPrevJobRecord
	if s, ok := l.jobs[r.JobID]; ok && r.JobID != "" {
		r.PrevJobSeq = int64(s)
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	l.add(r, HashLeaf(r.encode()))
	return r.clone(), nil
}

func (l *Log) add(r Record, leaf Hash) {
	l.records = append(l.records, r)
	l.tree.append(leaf)
	if r.JobID != "" {
		if l.jobs == nil {
			l.jobs = make(map[string]uint64)
		}
		l.jobs[r.JobID] = r.Seq
	}
}

// Record returns a copy of record i.
func (l *Log) Record(i uint64) (Record, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i >= uint64(len(l.records)) {
		return Record{}, fmt.Errorf("%w: record %d of %d", errRange, i, len(l.records))
	}
	return l.records[i].clone(), nil
}

// LeafHash returns the leaf hash of record i.
func (l *Log) LeafHash(i uint64) (Hash, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i >= l.tree.size() {
		return Hash{}, fmt.Errorf("%w: record %d of %d", errRange, i, l.tree.size())
	}
	return l.tree.levels[0][i], nil
}

// Root is the Merkle tree hash of the whole log.
func (l *Log) Root() Hash {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.mth(0, l.tree.size())
}

// RootAt is the Merkle tree hash of the first size records.
func (l *Log) RootAt(size uint64) (Hash, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.root(size)
}

// InclusionProof proves record index is in the tree of the first size
// records (RFC 9162 §2.1.3.1).
func (l *Log) InclusionProof(index, size uint64) ([]Hash, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.inclusion(index, size)
}

// ConsistencyProof proves the tree of size n extends the tree of size m
// (RFC 9162 §2.1.4.1).
func (l *Log) ConsistencyProof(m, n uint64) ([]Hash, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.consistency(m, n)
}

// The job index.
//
// A job's records link backwards (PrevJobSeq), which proves nothing about
// records after the last one an export shows. So every tree head also signs
// the job index: the Merkle tree (same hashing as the log) whose leaves are,
// for each job with a record in the tree, in increasing byte order of the
// job ID,
//
//	string "regionfl/audit/job/v1", string job_id, uint64 seq of its last record
//
// (strings as in Record.Encode). A job export carries the inclusion proof of
// its job's leaf, or of its neighbours' leaves if the job has no record.

const jobTag = "regionfl/audit/job/v1"

type jobEntry struct {
	job  string
	last uint64
}

func jobLeafData(job string, last uint64) []byte {
	b := make([]byte, 0, 8+len(jobTag)+len(job)+8)
	b = binary.BigEndian.AppendUint32(b, uint32(len(jobTag)))
	b = append(b, jobTag...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(job)))
	b = append(b, job...)
	return binary.BigEndian.AppendUint64(b, last)
}

// jobEntries lists the job index of the first size records; the caller
// holds the lock.
func (l *Log) jobEntries(size uint64) []jobEntry {
	last := l.jobs // each job's last record, for the whole log
	if size != uint64(len(l.records)) {
		last = make(map[string]uint64)
		for _, r := range l.records[:size] {
			if r.JobID != "" {
				last[r.JobID] = r.Seq
			}
		}
	}
	out := make([]jobEntry, 0, len(last))
	for j, s := range last {
		out = append(out, jobEntry{j, s})
	}
	slices.SortFunc(out, func(a, b jobEntry) int { return strings.Compare(a.job, b.job) })
	return out
}

func jobTree(entries []jobEntry) *tree {
	t := &tree{}
	for _, e := range entries {
		t.append(HashLeaf(jobLeafData(e.job, e.last)))
	}
	return t
}

// Commitment is what a tree head signs: a tree size, the log's root at
// that size and the job index's root at that size.
type Commitment struct {
	Size     uint64
	Root     Hash
	JobIndex Hash
}

// CommitmentAt computes the commitment for the first size records. For the
// current size it costs O(log n + jobs·log jobs); for an earlier one O(size).
func (l *Log) CommitmentAt(size uint64) (Commitment, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.commitmentAt(size)
}

func (l *Log) commitmentAt(size uint64) (Commitment, error) {
	root, err := l.tree.root(size)
	if err != nil {
		return Commitment{}, err
	}
	e := l.jobEntries(size)
	return Commitment{Size: size, Root: root, JobIndex: jobTree(e).mth(0, uint64(len(e)))}, nil
}

// jobRecords returns the seqs of job's records below size, oldest first.
func (l *Log) jobRecords(job string, size uint64) []uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	s, ok := l.jobs[job]
	if !ok {
		return nil
	}
	var seqs []uint64
	for cur := int64(s); cur >= 0; cur = l.records[cur].PrevJobSeq {
		if uint64(cur) < size {
			seqs = append(seqs, uint64(cur))
		}
	}
	slices.Reverse(seqs)
	return seqs
}

// Checkpoints.

// ErrCheckpoint is wrapped when AddCheckpoint refuses a tree head.
var ErrCheckpoint = errors.New("audit: bad checkpoint")

// AddCheckpoint stores a signed tree head of this log, to be shipped in
// exports. The leader signs a head (SignTreeHead) every so many records and
// proposes it in a Raft command; the state machine calls AddCheckpoint when
// it applies that command. AddCheckpoint is deterministic: it checks the
// head's size (above the last checkpoint's, at most Len), its root and job
// index against the log, and the presence of a signature and certificate,
// but it does not verify the signature (verify it before proposing).
func (l *Log) AddCheckpoint(th TreeHead) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addCheckpoint(th)
}

func (l *Log) addCheckpoint(th TreeHead) error {
	if th.Size == 0 || th.Size > uint64(len(l.records)) {
		return fmt.Errorf("%w: size %d, log has %d records", ErrCheckpoint, th.Size, len(l.records))
	}
	if n := len(l.checkpoints); n > 0 && th.Size <= l.checkpoints[n-1].Size {
		return fmt.Errorf("%w: size %d is not above the last checkpoint's %d", ErrCheckpoint, th.Size, l.checkpoints[n-1].Size)
	}
	if err := th.checkSyntax(); err != nil {
		return fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	c, err := l.commitmentAt(th.Size)
	if err != nil {
		return err
	}
	if th.RootHash != c.Root.String() || th.JobIndexHash != c.JobIndex.String() {
		return fmt.Errorf("%w: head of size %d does not match this log", ErrCheckpoint, th.Size)
	}
	l.checkpoints = append(l.checkpoints, th)
	return nil
}

// Checkpoints returns the stored checkpoints, oldest first.
func (l *Log) Checkpoints() []TreeHead {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return slices.Clone(l.checkpoints)
}

// Snapshots.

// SnapshotVersion is the version of the JSON form written by MarshalJSON.
const SnapshotVersion = 1

type snapshotJSON struct {
	Version     int        `json:"version"`
	Size        uint64     `json:"size"`
	RootHash    string     `json:"root_hash"`
	Records     []Record   `json:"records"`
	Checkpoints []TreeHead `json:"checkpoints,omitempty"`
}

// MarshalJSON writes the log for a Raft snapshot:
// {"version":1,"size":N,"root_hash":HEX,"records":[...],"checkpoints":[...]}.
func (l *Log) MarshalJSON() ([]byte, error) { return l.Freeze().MarshalJSON() }

// Frozen is the log as it stood when Freeze was called, to be encoded
// later while the log grows: records never change once appended, so the
// view shares them with the log instead of copying them.
type Frozen struct {
	records     []Record
	root        Hash
	checkpoints []TreeHead
}

// Freeze takes a Frozen view of the log in time independent of its size
// (bar the few checkpoints, which are copied).
func (l *Log) Freeze() Frozen {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return Frozen{records: slices.Clip(l.records), root: l.tree.mth(0, l.tree.size()), checkpoints: slices.Clone(l.checkpoints)}
}

// Len is the number of records in the view.
func (f Frozen) Len() uint64 { return uint64(len(f.records)) }

// MarshalJSON writes the view as Log.MarshalJSON writes the log.
func (f Frozen) MarshalJSON() ([]byte, error) {
	recs := f.records
	if recs == nil {
		recs = []Record{}
	}
	return json.Marshal(snapshotJSON{
		Version:     SnapshotVersion,
		Size:        uint64(len(recs)),
		RootHash:    f.root.String(),
		Records:     recs,
		Checkpoints: f.checkpoints,
	})
}

// ErrSnapshot is wrapped when UnmarshalJSON refuses a snapshot.
var ErrSnapshot = errors.New("audit: bad log snapshot")

// UnmarshalJSON restores a log written by MarshalJSON. It rebuilds the tree
// from the records and checks every record (validity, known action, seq,
// prev_hash, prev_job_seq, time order), the size and root, and every
// checkpoint against the rebuilt log; on any error the log is unchanged.
func (l *Log) UnmarshalJSON(b []byte) error {
	var s snapshotJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the snapshot", ErrSnapshot)
	}
	if s.Version != SnapshotVersion {
		return fmt.Errorf("%w: version %d, this build reads %d", ErrSnapshot, s.Version, SnapshotVersion)
	}
	if s.Size != uint64(len(s.Records)) {
		return fmt.Errorf("%w: size %d but %d records", ErrSnapshot, s.Size, len(s.Records))
	}
	n := &Log{records: make([]Record, 0, len(s.Records))}
	cp := 0 // next checkpoint to check
	addCheckpoint := func() error {
		if err := n.addCheckpoint(s.Checkpoints[cp]); err != nil {
			return fmt.Errorf("%w: checkpoint %d: %v", ErrSnapshot, cp, err)
		}
		cp++
		return nil
	}
	for i, r := range s.Records {
		if err := n.check(r, uint64(i)); err != nil {
			return fmt.Errorf("%w: record %d: %v", ErrSnapshot, i, err)
		}
		n.add(r, HashLeaf(r.encode()))
		// A checkpoint is checked when the log reaches its size, against
		// the live job index, rather than by rescanning the records below
		// it afterwards.
		for cp < len(s.Checkpoints) && s.Checkpoints[cp].Size == uint64(len(n.records)) {
			if err := addCheckpoint(); err != nil {
				return err
			}
		}
	}
	if root := n.tree.mth(0, n.tree.size()); root.String() != s.RootHash {
		return fmt.Errorf("%w: records hash to root %s, snapshot says %.80q", ErrSnapshot, root, s.RootHash)
	}
	for cp < len(s.Checkpoints) { // sizes the records never reached: refused
		if err := addCheckpoint(); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records, l.tree, l.jobs, l.checkpoints = n.records, n.tree, n.jobs, n.checkpoints
	return nil
}

// check verifies that r is what Append would have stored as record i of l.
func (l *Log) check(r Record, i uint64) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if !r.Action.Known() {
		return invalid("unknown action %.80q", r.Action)
	}
	if r.Seq != i {
		return fmt.Errorf("seq %d at position %d", r.Seq, i)
	}
	if i > 0 {
		if want := l.tree.levels[0][i-1].String(); r.PrevHash != want {
			return fmt.Errorf("prev_hash %s, want %s", r.PrevHash, want)
		}
		if prev := l.records[i-1].TimeUnixMs; r.TimeUnixMs < prev {
			return fmt.Errorf("time %d before the previous record's %d", r.TimeUnixMs, prev)
		}
	}
	want := noPrevJobRecord
	if s, ok := l.jobs[r.JobID]; ok && r.JobID != "" {
		want = int64(s)
	}
	if r.PrevJobSeq != want {
		return fmt.Errorf("prev_job_seq %d, want %d", r.PrevJobSeq, want)
	}
	return nil
}
