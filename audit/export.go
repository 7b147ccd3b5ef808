package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// ExportVersion is the version of the export format written by Export.
const ExportVersion = 1

// Filter selects the records of an export. The zero Filter selects all.
type Filter struct {
	// JobID keeps only that job's records.
	JobID string `json:"job_id,omitempty"`
	// SinceUnixMs keeps records at or after this time (0: from the start).
	SinceUnixMs int64 `json:"since_unix_ms,omitempty"`
	// UntilUnixMs keeps records before this time (0: to the end).
	UntilUnixMs int64 `json:"until_unix_ms,omitempty"`
}

// Validate checks a filter.
func (f Filter) Validate() error {
	switch {
	case len(f.JobID) > MaxFieldBytes || !utf8.ValidString(f.JobID):
		return errors.New("audit: filter job_id: too long or not UTF-8")
	case f.SinceUnixMs < 0 || f.UntilUnixMs < 0:
		return errors.New("audit: filter times must not be negative")
	case f.UntilUnixMs != 0 && f.UntilUnixMs <= f.SinceUnixMs:
		return errors.New("audit: filter until must be after since")
	}
	return nil
}

// Match reports whether the filter selects r.
func (f Filter) Match(r *Record) bool {
	return (f.JobID == "" || r.JobID == f.JobID) && r.TimeUnixMs >= f.SinceUnixMs &&
		(f.UntilUnixMs == 0 || r.TimeUnixMs < f.UntilUnixMs)
}

// String describes the filter for people.
func (f Filter) String() string {
	var parts []string
	if f.JobID != "" {
		parts = append(parts, fmt.Sprintf("job %q", f.JobID))
	}
	if f.SinceUnixMs != 0 {
		parts = append(parts, "since "+time.UnixMilli(f.SinceUnixMs).UTC().Format(time.RFC3339Nano))
	}
	if f.UntilUnixMs != 0 {
		parts = append(parts, "until "+time.UnixMilli(f.UntilUnixMs).UTC().Format(time.RFC3339Nano))
	}
	if len(parts) == 0 {
		return "all records"
	}
	return strings.Join(parts, ", ")
}

// The export format, JSON Lines: one JSON object per line, each with a
// "type", in this order.
//
//	{"type":"header","version":1,"filter":{...}}
//	{"type":"checkpoint","head":{TreeHead},"consistency":{"from_size":M,"to_size":N,"hashes":[...]}}   (zero or more, increasing size)
//	{"type":"job_index","job_id":J,"entries":[{"job_id":..,"last_seq":..,"proof":{...}}]}         (iff the filter has a job)
//	{"type":"boundary"|"record","record":{Record},"proof":{"leaf_index":I,"tree_size":N,"hashes":[...]}} (increasing seq)
//	{"type":"head","head":{TreeHead}}
//
// Hashes are lowercase hex. Every proof refers to the final head, of size
// N. "record" lines are the records the filter selects. "boundary" lines are
// the records just outside the selection that prove nothing was left out:
// the last record before it (time before since) and the first record after
// it (time at or after until), of the whole log or, with a job filter, of
// the job. The job_index entries are the job's own leaf in the signed job
// index, or, for a job without records, its neighbours' leaves.

type headerLine struct {
	Type    string `json:"type"`
	Version int    `json:"version"`
	Filter  Filter `json:"filter"`
}

// ProofJSON is an inclusion proof in an export.
type ProofJSON struct {
	LeafIndex uint64   `json:"leaf_index"`
	TreeSize  uint64   `json:"tree_size"`
	Hashes    []string `json:"hashes"`
}

// ConsistencyJSON is a consistency proof in an export.
type ConsistencyJSON struct {
	FromSize uint64   `json:"from_size"`
	ToSize   uint64   `json:"to_size"`
	Hashes   []string `json:"hashes"`
}

type recordLine struct {
	Type   string          `json:"type"`
	Record json.RawMessage `json:"record"`
	Proof  ProofJSON       `json:"proof"`
}

type checkpointLine struct {
	Type        string          `json:"type"`
	Head        TreeHead        `json:"head"`
	Consistency ConsistencyJSON `json:"consistency"`
}

// JobIndexEntryJSON is one leaf of the job index with its proof.
type JobIndexEntryJSON struct {
	JobID   string    `json:"job_id"`
	LastSeq uint64    `json:"last_seq"`
	Proof   ProofJSON `json:"proof"`
}

type jobIndexLine struct {
	Type    string              `json:"type"`
	JobID   string              `json:"job_id"`
	Entries []JobIndexEntryJSON `json:"entries"`
}

type headLine struct {
	Type string   `json:"type"`
	Head TreeHead `json:"head"`
}

// Line types.
const (
	lineHeader     = "header"
	lineCheckpoint = "checkpoint"
	lineJobIndex   = "job_index"
	lineBoundary   = "boundary"
	lineRecord     = "record"
	lineHead       = "head"
)

func hexes(hs []Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

// Export writes the records of l that f selects, as of the signed head
// final, with the checkpoints among heads whose size is at most
// final.Size, in the format above. final must be a head of l (it is
// usually signed just before, with Log.SignHead at Log.Len()); its
// signature is not checked here. Records appended to l meanwhile are not
// exported.
func Export(w io.Writer, l *Log, f Filter, heads []TreeHead, final TreeHead) error {
	if err := f.Validate(); err != nil {
		return err
	}
	n := final.Size
	fc, err := final.Commitment()
	if err != nil {
		return err
	}
	c, err := l.CommitmentAt(n)
	if err != nil {
		return fmt.Errorf("audit: export: final head: %w", err)
	}
	if c != fc {
		return fmt.Errorf("audit: export: the final head (size %d) is not a head of this log", n)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw) // escapes HTML characters, as json.Marshal does for records
	if err := enc.Encode(headerLine{Type: lineHeader, Version: ExportVersion, Filter: f}); err != nil {
		return err
	}

	// Checkpoints, increasing size, each with its consistency proof.
	cps := slices.Clone(heads)
	slices.SortStableFunc(cps, func(a, b TreeHead) int {
		switch {
		case a.Size < b.Size:
			return -1
		case a.Size > b.Size:
			return 1
		}
		return 0
	})
	var last uint64
	for _, h := range cps {
		if h.Size == 0 || h.Size > n || h.Size == last {
			continue
		}
		root, err := l.RootAt(h.Size)
		if err != nil {
			return err
		}
		if h.RootHash != root.String() {
			return fmt.Errorf("audit: export: checkpoint of size %d is not a head of this log", h.Size)
		}
		p, err := l.ConsistencyProof(h.Size, n)
		if err != nil {
			return err
		}
		if err := enc.Encode(checkpointLine{Type: lineCheckpoint, Head: h,
			Consistency: ConsistencyJSON{FromSize: h.Size, ToSize: n, Hashes: hexes(p)}}); err != nil {
			return err
		}
		last = h.Size
	}

	// Which records: selected ones and the boundaries around them.
	var seqs []uint64 // candidate records, in order; all selected ones are contiguous in it
	if f.JobID != "" {
		seqs = l.jobRecords(f.JobID, n)
		if err := writeJobIndex(enc, l, f.JobID, n); err != nil {
			return err
		}
	}
	at := func(i int) uint64 {
		if seqs != nil {
			return seqs[i]
		}
		return uint64(i)
	}
	count := int(n)
	if f.JobID != "" {
		count = len(seqs)
	}
	timeOf := func(i int) int64 {
		r, _ := l.Record(at(i))
		return r.TimeUnixMs
	}
	// The log is ordered by time, so the selection is the range [lo, hi).
	lo := sort.Search(count, func(i int) bool { return timeOf(i) >= f.SinceUnixMs })
	hi := count
	if f.UntilUnixMs != 0 {
		hi = sort.Search(count, func(i int) bool { return timeOf(i) >= f.UntilUnixMs })
	}
	hi = max(hi, lo)
	write := func(i int, typ string) error {
		seq := at(i)
		r, err := l.Record(seq)
		if err != nil {
			return err
		}
		raw, err := json.Marshal(&r)
		if err != nil {
			return err
		}
		p, err := l.InclusionProof(seq, n)
		if err != nil {
			return err
		}
		return enc.Encode(recordLine{Type: typ, Record: raw,
			Proof: ProofJSON{LeafIndex: seq, TreeSize: n, Hashes: hexes(p)}})
	}
	if lo > 0 {
		if err := write(lo-1, lineBoundary); err != nil {
			return err
		}
	}
	for i := lo; i < hi; i++ {
		if err := write(i, lineRecord); err != nil {
			return err
		}
	}
	if hi < count {
		if err := write(hi, lineBoundary); err != nil {
			return err
		}
	}
	if err := enc.Encode(headLine{Type: lineHead, Head: final}); err != nil {
		return err
	}
	return bw.Flush()
}

// writeJobIndex writes the job index proof for job at size n: the job's
// leaf, or the neighbours proving it has none.
func writeJobIndex(enc *json.Encoder, l *Log, job string, n uint64) error {
	l.mu.RLock()
	entries := l.jobEntries(n)
	l.mu.RUnlock()
	t := jobTree(entries)
	k := uint64(len(entries))
	entry := func(i int) (JobIndexEntryJSON, error) {
		p, err := t.inclusion(uint64(i), k)
		if err != nil {
			return JobIndexEntryJSON{}, err
		}
		return JobIndexEntryJSON{JobID: entries[i].job, LastSeq: entries[i].last,
			Proof: ProofJSON{LeafIndex: uint64(i), TreeSize: k, Hashes: hexes(p)}}, nil
	}
	i, found := slices.BinarySearchFunc(entries, job, func(e jobEntry, j string) int { return strings.Compare(e.job, j) })
	var idx []int
	if found {
		idx = []int{i}
	} else {
		// entries[i-1] < job < entries[i]
		if i > 0 {
			idx = append(idx, i-1)
		}
		if i < len(entries) {
			idx = append(idx, i)
		}
	}
	line := jobIndexLine{Type: lineJobIndex, JobID: job, Entries: []JobIndexEntryJSON{}}
	for _, i := range idx {
		e, err := entry(i)
		if err != nil {
			return err
		}
		line.Entries = append(line.Entries, e)
	}
	return enc.Encode(line)
}
