package audit

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"regionfl/identity"
	"regionfl/jobspec"
)

// MaxLineBytes bounds one line of an export file.
const MaxLineBytes = 1 << 20

// Report describes a verified export.
type Report struct {
	Filter      Filter
	Records     int    // selected records
	Boundaries  int    // records outside the selection proving its edges
	FirstSeq    int64  // seq of the first selected record, -1 if none
	LastSeq     int64  // seq of the last selected record, -1 if none
	TreeSize    uint64 // size of the signed log
	RootHash    string
	SignedAt    time.Time
	Signer      identity.Identity // of the final head
	CAChecked   bool              // the signers' certificates chain to the given CA
	Checkpoints int               // checkpoints, all consistent with the final head
	// SignedContributions counts the contribution records whose hospital's
	// signed statement verified: that hospital sent exactly that update
	// (digest, size) for that job, round and model.
	SignedContributions int
	// SignedJobs counts the job submissions whose researcher's signature
	// over the spec verified.
	SignedJobs int
	// SignedShares counts the decryption share records whose decryptor's
	// signed statement verified: that hospital gave exactly that share
	// (digest) for that aggregate, contributor set and decryptor set.
	SignedShares int
	// SignedApprovals counts the contributor-set approvals whose
	// hospital's signed statement verified: that hospital agreed to have
	// exactly its update (digest) decrypted in exactly that contributor
	// set, with exactly that aggregate, which it vouched for with the
	// fingerprint of its update.
	SignedApprovals int
}

// VerifyError is a verification failure, tied to the first line of the
// export found bad (Line 0 if none can be named).
type VerifyError struct {
	Line    int    // 1-based line number
	Subject string // what the line holds: "record seq 41", "checkpoint at size 100", "head", ...
	Msg     string
}

func (e *VerifyError) Error() string {
	switch {
	case e.Line == 0:
		return e.Msg
	case e.Subject == "":
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("line %d, %s: %s", e.Line, e.Subject, e.Msg)
}

// rootClaim tracks, in constant memory, the (tree size, root) that every
// record and checkpoint line's proof leads to: all must equal the final
// head's. It keeps the first claim and the first line whose claim differs
// from it, which together name the first line that disagrees with the head.
type rootClaim struct {
	set       bool
	size      uint64
	root      Hash
	first     *VerifyError // message if the first claim is wrong
	deviation *VerifyError // first line whose claim differs from the first
}

func (c *rootClaim) add(size uint64, root Hash, ifWrong *VerifyError) {
	switch {
	case !c.set:
		c.set, c.size, c.root, c.first = true, size, root, ifWrong
	case (size != c.size || root != c.root) && c.deviation == nil:
		c.deviation = ifWrong
	}
}

// check returns the first line whose claim is not (size, root).
func (c *rootClaim) check(size uint64, root Hash) *VerifyError {
	switch {
	case !c.set:
		return nil
	case c.size != size || c.root != root:
		return c.first
	}
	return c.deviation
}

type verifier struct {
	roots  *x509.CertPool
	rep    Report
	filter Filter
	line   int
	stage  int // 0 before the header, 1 header/checkpoints, 2 job index, 3 records, 4 after the head

	// The first bad line found while reading; later lines are then only
	// scanned for the head.
	bad *VerifyError

	claims rootClaim

	// decrypting holds, by job and round, what the export's round.closed
	// record (and later decryption.retried records) say the round
	// decrypts: every signed share of the round must be for exactly that.
	decrypting map[string]*decryptingRound
	// contributed holds, by job and round, each hospital's counted update
	// digest, as the export's contribution records say.
	contributed map[string]map[string]string

	cpSize uint64 // size of the last checkpoint

	jobIdx     bool
	jobIdxLine int
	jobIdxRoot Hash // root the job index proofs lead to
	jobIdxSize uint64
	jobLast    int64 // the job's last seq per the index, -1 if absent

	// Record lines.
	have     bool // a record or boundary line was read
	prev     Record
	prevLeaf Hash
	prevLine int
	closed   bool // a closing boundary was read

	head     *TreeHead
	headLine int
	lastRaw  []byte // the last line, kept once bad is set
}

func (v *verifier) fail(subject, format string, args ...any) *VerifyError {
	return &VerifyError{Line: v.line, Subject: subject, Msg: fmt.Sprintf(format, args...)}
}

// Verify reads an export written by Export and checks it offline: every
// record's inclusion in the signed log, the order and completeness of the
// records for the export's filter, the checkpoints' signatures and
// consistency with the final head, and the final head's signature. With
// roots nil, signatures are checked against the certificates in the file
// only (Report.CAChecked is false). On failure the error is a *VerifyError
// naming the first bad line; the Report then holds what was read.
//
// The filter is read from the file's header: the caller must check that
// Report.Filter is what was asked for.
func Verify(r io.Reader, roots *x509.CertPool) (Report, error) {
	v := &verifier{roots: roots, jobLast: -1}
	v.rep.FirstSeq, v.rep.LastSeq = -1, -1
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes)
	for sc.Scan() {
		v.line++
		b := sc.Bytes()
		if v.bad != nil {
			v.lastRaw = append(v.lastRaw[:0], b...)
			continue
		}
		if e := v.readLine(b); e != nil {
			v.bad = e
		}
	}
	if err := sc.Err(); err != nil {
		e := &VerifyError{Line: v.line + 1, Msg: "cannot read: " + err.Error()}
		if errors.Is(err, bufio.ErrTooLong) {
			e.Msg = fmt.Sprintf("line longer than %d bytes", MaxLineBytes)
		}
		if v.bad == nil {
			v.bad = e
		}
		return v.rep, v.bad
	}
	return v.rep, v.finish()
}

func (v *verifier) finish() error {
	// Find the head: it was read, or it is the last line after a bad one.
	if v.head == nil && v.bad != nil && v.lastRaw != nil {
		var hl headLine
		if strictUnmarshal(v.lastRaw, &hl) == nil && hl.Type == lineHead {
			v.head, v.headLine = &hl.Head, v.line
		}
	}
	if v.head == nil {
		if v.bad != nil {
			return v.bad
		}
		return &VerifyError{Line: v.line + 1, Msg: "the file ends without a head line: truncated"}
	}
	id, err := VerifyTreeHead(*v.head, v.roots)
	if err != nil {
		he := &VerifyError{Line: v.headLine, Subject: "head", Msg: err.Error()}
		return earliest(v.bad, he)
	}
	c, _ := v.head.Commitment()
	v.rep.TreeSize, v.rep.RootHash = c.Size, v.head.RootHash
	v.rep.SignedAt, v.rep.Signer = time.UnixMilli(v.head.TimeUnixMs).UTC(), id
	v.rep.CAChecked = v.roots != nil

	errs := []*VerifyError{v.bad, v.claims.check(c.Size, c.Root)}
	if v.jobIdx && v.jobIdxRoot != c.JobIndex {
		errs = append(errs, &VerifyError{Line: v.jobIdxLine, Subject: "job index", Msg: "proof does not match the signed head's job index"})
	}
	if v.bad == nil {
		errs = append(errs, v.complete(c))
	}
	if e := earliest(errs...); e != nil {
		return e
	}
	return nil
}

// complete checks, once the head is trusted, that the export leaves out no
// record the filter selects.
func (v *verifier) complete(c Commitment) *VerifyError {
	at := func(line int, subject, format string, args ...any) *VerifyError {
		return &VerifyError{Line: line, Subject: subject, Msg: fmt.Sprintf(format, args...)}
	}
	lastSubject := fmt.Sprintf("record seq %d", v.prev.Seq)
	if v.filter.JobID == "" {
		switch {
		case !v.have && c.Size > 0:
			return at(v.headLine, "head", "the export holds no record, but the signed log has %d", c.Size)
		case v.have && !v.closed && v.prev.Seq != c.Size-1:
			return at(v.prevLine, lastSubject, "last record of the export, but the signed log has %d records: seq %d to %d are missing (truncated)",
				c.Size, v.prev.Seq+1, c.Size-1)
		}
		return nil
	}
	// The head line was only accepted after a job_index line (readLine).
	job := v.filter.JobID
	switch {
	case v.jobLast < 0 && v.have:
		return at(v.jobIdxLine, "job index", "says job %q has no record, but the export holds some", job)
	case v.jobLast >= 0 && !v.have:
		return at(v.jobIdxLine, "job index", "job %q's last record is seq %d, but the export holds none of its records", job, v.jobLast)
	case v.jobLast >= 0 && v.jobLast < int64(v.prev.Seq):
		return at(v.jobIdxLine, "job index", "job %q's last record is seq %d, before the export's seq %d", job, v.jobLast, v.prev.Seq)
	case v.jobLast >= 0 && !v.closed && v.jobLast != int64(v.prev.Seq):
		return at(v.prevLine, lastSubject, "last record of job %q in the export, but the job's last record is seq %d: records are missing (truncated)", job, v.jobLast)
	}
	return nil
}

func earliest(errs ...*VerifyError) *VerifyError {
	var out *VerifyError
	for _, e := range errs {
		if e != nil && (out == nil || e.Line < out.Line) {
			out = e
		}
	}
	return out
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

func parseHashes(hs []string) ([]Hash, error) {
	if len(hs) > MaxProofHashes {
		return nil, fmt.Errorf("%d proof hashes (at most %d)", len(hs), MaxProofHashes)
	}
	out := make([]Hash, len(hs))
	for i, s := range hs {
		h, err := ParseHash(s)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

func (v *verifier) readLine(b []byte) *VerifyError {
	if len(bytes.TrimSpace(b)) == 0 {
		return v.fail("", "empty line")
	}
	var t struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return v.fail("", "not a JSON object: %v", err)
	}
	if v.stage == 0 && t.Type != lineHeader {
		return v.fail("", "the first line must be the header, not %.40q", t.Type)
	}
	switch t.Type {
	case lineHeader:
		return v.header(b)
	case lineCheckpoint:
		return v.checkpoint(b)
	case lineJobIndex:
		return v.jobIndex(b)
	case lineRecord, lineBoundary:
		return v.record(b, t.Type == lineBoundary)
	case lineHead:
		if v.stage == 4 {
			return v.fail("head", "a second head line")
		}
		var hl headLine
		if err := strictUnmarshal(b, &hl); err != nil {
			return v.fail("head", "bad JSON: %v", err)
		}
		if v.filter.JobID != "" && !v.jobIdx {
			return v.fail("head", "the export is for job %q but has no job_index line", v.filter.JobID)
		}
		v.head, v.headLine, v.stage = &hl.Head, v.line, 4
		return nil
	}
	return v.fail("", "unknown line type %.40q", t.Type)
}

func (v *verifier) header(b []byte) *VerifyError {
	if v.stage != 0 {
		return v.fail("header", "a second header line")
	}
	var h headerLine
	if err := strictUnmarshal(b, &h); err != nil {
		return v.fail("header", "bad JSON: %v", err)
	}
	if h.Version != ExportVersion {
		return v.fail("header", "export format version %d, this build reads %d", h.Version, ExportVersion)
	}
	if err := h.Filter.Validate(); err != nil {
		return v.fail("header", "%v", err)
	}
	v.filter, v.rep.Filter, v.stage = h.Filter, h.Filter, 1
	return nil
}

func (v *verifier) checkpoint(b []byte) *VerifyError {
	var cl checkpointLine
	if err := strictUnmarshal(b, &cl); err != nil {
		return v.fail("checkpoint", "bad JSON: %v", err)
	}
	subject := fmt.Sprintf("checkpoint at size %d", cl.Head.Size)
	switch {
	case v.stage > 1:
		return v.fail(subject, "checkpoints must come before the job index and the records")
	case cl.Head.Size <= v.cpSize:
		return v.fail(subject, "checkpoints out of order: size %d after %d", cl.Head.Size, v.cpSize)
	case cl.Consistency.FromSize != cl.Head.Size || cl.Consistency.ToSize < cl.Head.Size:
		return v.fail(subject, "consistency proof from size %d to %d does not start at the checkpoint",
			cl.Consistency.FromSize, cl.Consistency.ToSize)
	}
	if _, err := VerifyTreeHead(cl.Head, v.roots); err != nil {
		return v.fail(subject, "%v", err)
	}
	c, _ := cl.Head.Commitment()
	proof, err := parseHashes(cl.Consistency.Hashes)
	if err != nil {
		return v.fail(subject, "consistency proof: %v", err)
	}
	implied, err := rootFromConsistency(c.Size, cl.Consistency.ToSize, c.Root, proof)
	if err != nil {
		return v.fail(subject, "%v", err)
	}
	v.claims.add(cl.Consistency.ToSize, implied, v.fail(subject, "not consistent with the signed head: the log was rewritten, or this checkpoint is not of this log"))
	v.cpSize = cl.Head.Size
	v.rep.Checkpoints++
	return nil
}

func (v *verifier) jobIndex(b []byte) *VerifyError {
	var jl jobIndexLine
	if err := strictUnmarshal(b, &jl); err != nil {
		return v.fail("job index", "bad JSON: %v", err)
	}
	switch {
	case v.filter.JobID == "":
		return v.fail("job index", "a job_index line in an export not filtered by job")
	case v.jobIdx:
		return v.fail("job index", "a second job_index line")
	case v.stage > 2:
		return v.fail("job index", "the job_index line must come before the records")
	case jl.JobID != v.filter.JobID:
		return v.fail("job index", "for job %q, but the export is for job %q", jl.JobID, v.filter.JobID)
	case len(jl.Entries) > 2:
		return v.fail("job index", "%d entries (at most 2)", len(jl.Entries))
	}
	v.jobIdx, v.jobIdxLine, v.stage = true, v.line, 2
	job := v.filter.JobID
	if len(jl.Entries) == 0 {
		// Only the empty index has no neighbour for a missing job.
		v.jobIdxRoot, v.jobIdxSize = EmptyRoot, 0
		return nil
	}
	var idx [2]uint64
	for i, e := range jl.Entries {
		proof, err := parseHashes(e.Proof.Hashes)
		if err != nil {
			return v.fail("job index", "proof: %v", err)
		}
		if len(e.JobID) > MaxFieldBytes {
			return v.fail("job index", "job_id too long")
		}
		r, err := rootFromInclusion(HashLeaf(jobLeafData(e.JobID, e.LastSeq)), e.Proof.LeafIndex, e.Proof.TreeSize, proof)
		if err != nil {
			return v.fail("job index", "%v", err)
		}
		if i > 0 && (r != v.jobIdxRoot || e.Proof.TreeSize != v.jobIdxSize) {
			return v.fail("job index", "entries prove different job indexes")
		}
		v.jobIdxRoot, v.jobIdxSize, idx[i] = r, e.Proof.TreeSize, e.Proof.LeafIndex
	}
	e := jl.Entries
	switch {
	case len(e) == 1 && e[0].JobID == job:
		v.jobLast = int64(e[0].LastSeq)
	case len(e) == 1 && job < e[0].JobID && idx[0] == 0:
	case len(e) == 1 && job > e[0].JobID && idx[0] == v.jobIdxSize-1:
	case len(e) == 2 && e[0].JobID < job && job < e[1].JobID && idx[1] == idx[0]+1:
	default:
		return v.fail("job index", "entries prove neither job %q's last record nor its absence", job)
	}
	return nil
}

func (v *verifier) record(b []byte, boundary bool) *VerifyError {
	kind := "record"
	if boundary {
		kind = "boundary record"
	}
	var rl recordLine
	if err := strictUnmarshal(b, &rl); err != nil {
		return v.fail(kind, "bad JSON: %v", err)
	}
	var r Record
	if err := strictUnmarshal(rl.Record, &r); err != nil {
		return v.fail(kind, "bad JSON: %v", err)
	}
	subject := fmt.Sprintf("%s seq %d", kind, r.Seq)
	switch {
	case v.stage > 3:
		return v.fail(subject, "after the head line")
	case v.filter.JobID != "" && !v.jobIdx:
		return v.fail(subject, "before the job_index line")
	}
	v.stage = 3
	if err := r.Validate(); err != nil {
		return v.fail(subject, "%v", err)
	}
	canon, err := json.Marshal(&r)
	if err != nil {
		return v.fail(subject, "%v", err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, rl.Record); err != nil || !bytes.Equal(compact.Bytes(), canon) {
		return v.fail(subject, "the record is not in canonical form (edited?)")
	}
	leaf := HashLeaf(r.encode())
	if rl.Proof.LeafIndex != r.Seq {
		return v.fail(subject, "the inclusion proof is for leaf %d", rl.Proof.LeafIndex)
	}
	proof, err := parseHashes(rl.Proof.Hashes)
	if err != nil {
		return v.fail(subject, "inclusion proof: %v", err)
	}
	implied, err := rootFromInclusion(leaf, rl.Proof.LeafIndex, rl.Proof.TreeSize, proof)
	if err != nil {
		return v.fail(subject, "%v", err)
	}

	f := v.filter
	job := f.JobID != ""
	if v.have {
		p := v.prev
		switch {
		case v.closed:
			return v.fail(subject, "follows the closing boundary record seq %d", p.Seq)
		case r.Seq <= p.Seq:
			return v.fail(subject, "out of order: after record seq %d", p.Seq)
		case r.TimeUnixMs < p.TimeUnixMs:
			return v.fail(subject, "time %d is before the previous record's %d (out of order)", r.TimeUnixMs, p.TimeUnixMs)
		case !job && r.Seq != p.Seq+1:
			return v.fail(subject, "the previous record in the export is seq %d: %s missing or out of order", p.Seq, seqRange(p.Seq+1, r.Seq-1))
		case job && r.PrevJobSeq != int64(p.Seq):
			return v.fail(subject, "its previous record of job %q is seq %d, but the export's previous record is seq %d: records missing or out of order", f.JobID, r.PrevJobSeq, p.Seq)
		case r.Seq == p.Seq+1 && r.PrevHash != v.prevLeaf.String():
			return v.fail(subject, "prev_hash does not match record seq %d (edited or out of order)", p.Seq)
		}
	}
	if job && r.JobID != f.JobID {
		return v.fail(subject, "belongs to job %q, not %q", r.JobID, f.JobID)
	}
	before := !v.have && boundary && r.TimeUnixMs < f.SinceUnixMs
	switch {
	case boundary && before:
	case boundary && f.UntilUnixMs != 0 && r.TimeUnixMs >= f.UntilUnixMs:
		v.closed = true
	case boundary:
		return v.fail(subject, "a boundary record must be the last before the filter's window or the first after it")
	case !f.Match(&r):
		return v.fail(subject, "does not match the export's filter (%s)", f)
	}
	if !v.have && !before {
		// Nothing before this line: it must be the first record of the log,
		// or of the job.
		switch {
		case !job && r.Seq != 0:
			return v.fail(subject, "first record of the export, but nothing proves that records 0 to %d are outside the filter: records missing", r.Seq-1)
		case job && r.PrevJobSeq != noPrevJobRecord:
			return v.fail(subject, "first record of job %q in the export, but the job's previous record seq %d is missing", f.JobID, r.PrevJobSeq)
		}
	}
	if r.Action == ActionContributionAccepted && r.Details["signature"] != "" {
		if err := checkContribution(&r, v.roots); err != nil {
			return v.fail(subject, "contribution statement: %v", err)
		}
		v.rep.SignedContributions++
	}
	if r.Action == ActionDecryptionShareGiven && r.Details["signature"] != "" {
		if err := checkDecryptionShare(&r, v.roots); err != nil {
			return v.fail(subject, "decryption share statement: %v", err)
		}
		if err := v.decrypting[roundKey(&r)].check(&r); err != nil {
			return v.fail(subject, "decryption share: %v", err)
		}
		v.rep.SignedShares++
	}
	if r.Action == ActionContributorsApproved && r.Details["fingerprint"] != "" {
		if err := checkApproval(&r, v.roots); err != nil {
			return v.fail(subject, "approval statement: %v", err)
		}
		if err := v.checkApprovedRound(&r); err != nil {
			return v.fail(subject, "approval: %v", err)
		}
		v.rep.SignedApprovals++
	}
	v.noteRound(&r)
	if r.Action == ActionJobSubmitted && r.Details["signature"] != "" {
		if err := checkJob(&r, v.roots); err != nil {
			return v.fail(subject, "job statement: %v", err)
		}
		v.rep.SignedJobs++
	}
	v.claims.add(rl.Proof.TreeSize, implied, v.fail(subject, "inclusion proof does not match the signed head (record edited, or not in the signed log)"))
	v.have, v.prev, v.prevLeaf, v.prevLine = true, r, leaf, v.line
	if boundary {
		v.rep.Boundaries++
	} else {
		v.rep.Records++
		if v.rep.FirstSeq < 0 {
			v.rep.FirstSeq = int64(r.Seq)
		}
		v.rep.LastSeq = int64(r.Seq)
	}
	return nil
}

// checkContribution verifies a contribution record's signed statement
// (identity.StatementContribution): the certificate names the record's
// hospital (and chains to roots, when given), and its key signed the
// region, the binding of the record's job, round, model version and model,
// the update's digest and its size.
func checkContribution(r *Record, roots *x509.CertPool) error {
	st, err := signedRound(r)
	if err != nil {
		return err
	}
	digest, err := sha256Hex(r.Digest, "digest")
	if err != nil {
		return err
	}
	fields := identity.ContributionFields(st.region, st.binding[:], digest, r.Hospital, r.Size)
	want := identity.Identity{Name: r.Hospital, Role: identity.RoleHospital}
	return checkStatement(r, roots, want, st.cert, st.sig, identity.StatementContribution, fields...)
}

// checkDecryptionShare verifies a decryption share record's signed
// statement (identity.StatementDecryptionShare): the certificate names the
// record's hospital (and chains to roots, when given), and its key signed
// the region, the round's binding, the aggregate's digest, the share's
// digest, the attempt, and the contributor and decryptor sets the record
// names.
func checkDecryptionShare(r *Record, roots *x509.CertPool) error {
	st, err := signedRound(r)
	if err != nil {
		return err
	}
	share, err := sha256Hex(r.Digest, "digest")
	if err != nil {
		return err
	}
	aggregate, err := sha256Hex(r.Details["aggregate_digest"], "details[aggregate_digest]")
	if err != nil {
		return err
	}
	attempt, err := strconv.ParseUint(r.Details["attempt"], 10, 32)
	if err != nil {
		return errors.New("details[attempt] is not a number")
	}
	contributors, decryptors := sortedNames(r.Details["contributors"]), sortedNames(r.Details["decryptors"])
	if len(contributors) == 0 || !slices.Contains(decryptors, r.Hospital) {
		return fmt.Errorf("the record names contributors %v and decryptors %v, without %s among the decryptors", contributors, decryptors, r.Hospital)
	}
	fields := identity.DecryptionShareFields(st.region, st.binding[:], aggregate, share, r.Hospital, uint32(attempt), contributors, decryptors)
	want := identity.Identity{Name: r.Hospital, Role: identity.RoleHospital}
	return checkStatement(r, roots, want, st.cert, st.sig, identity.StatementDecryptionShare, fields...)
}

// checkApproval verifies an approval record's signed statement
// (identity.StatementApproval): the certificate names the record's
// hospital (and chains to roots, when given), and its key signed the
// region, the round's binding, its own update's digest, the aggregate's
// digest, the fingerprint of its update and the contributor set, which
// names it.
func checkApproval(r *Record, roots *x509.CertPool) error {
	st, err := signedRound(r)
	if err != nil {
		return err
	}
	update, err := sha256Hex(r.Details["update_digest"], "details[update_digest]")
	if err != nil {
		return err
	}
	aggregate, err := sha256Hex(r.Details["aggregate_digest"], "details[aggregate_digest]")
	if err != nil {
		return err
	}
	fingerprint, err := hexDetail(r, "fingerprint")
	if err != nil {
		return err
	}
	contributors := sortedNames(r.Details["contributors"])
	if !slices.Contains(contributors, r.Hospital) {
		return fmt.Errorf("the record names contributors %v, without %s", contributors, r.Hospital)
	}
	fields := identity.ApprovalFields(st.region, st.binding[:], update, aggregate, fingerprint, r.Hospital, contributors)
	want := identity.Identity{Name: r.Hospital, Role: identity.RoleHospital}
	return checkStatement(r, roots, want, st.cert, st.sig, identity.StatementApproval, fields...)
}

// checkApprovedRound requires an approval to be for the aggregate and
// contributors its round closed with, and for the update the hospital was
// counted with, as far as the export holds those records.
func (v *verifier) checkApprovedRound(r *Record) error {
	key := roundKey(r)
	if err := v.decrypting[key].checkSet(r); err != nil {
		return err
	}
	if counted, ok := v.contributed[key][r.Hospital]; ok && counted != r.Details["update_digest"] {
		return fmt.Errorf("of update %.16s…, %s was counted in round %d with %.16s…", r.Details["update_digest"], r.Hospital, r.Round, counted)
	}
	return nil
}

// decryptingRound is what a closed round decrypts, as its round.closed
// and decryption.retried records say.
type decryptingRound struct {
	aggregate                string
	contributors, decryptors []string
}

func roundKey(r *Record) string { return r.JobID + "/" + strconv.FormatUint(uint64(r.Round), 10) }

// sortedNames is a comma-separated detail's names, sorted.
func sortedNames(s string) []string {
	if s == "" {
		return nil
	}
	return slices.Sorted(slices.Values(strings.Split(s, ",")))
}

// noteRound records what a contribution record says was counted, and
// what a round.closed or decryption.retried record says the round
// decrypts.
func (v *verifier) noteRound(r *Record) {
	switch r.Action {
	case ActionContributionAccepted:
		if v.contributed == nil {
			v.contributed = map[string]map[string]string{}
		}
		key := roundKey(r)
		if v.contributed[key] == nil {
			v.contributed[key] = map[string]string{}
		}
		v.contributed[key][r.Hospital] = r.Digest
	case ActionRoundClosed:
		if v.decrypting == nil {
			v.decrypting = map[string]*decryptingRound{}
		}
		v.decrypting[roundKey(r)] = &decryptingRound{aggregate: r.Digest,
			contributors: sortedNames(r.Details["contributors"]), decryptors: sortedNames(r.Details["decryptors"])}
	case ActionDecryptionRetried:
		if d := v.decrypting[roundKey(r)]; d != nil {
			d.decryptors = sortedNames(r.Details["decryptors"])
		}
	}
}

// check requires a share record to be for the aggregate, contributors and
// decryptors of its round; a round closed before the export's window
// (d nil) cannot be checked.
func (d *decryptingRound) check(r *Record) error {
	if err := d.checkSet(r); err != nil || d == nil {
		return err
	}
	if !slices.Equal(sortedNames(r.Details["decryptors"]), d.decryptors) {
		return fmt.Errorf("made for decryptors %s, round %d asked %v", r.Details["decryptors"], r.Round, d.decryptors)
	}
	return nil
}

// checkSet requires a share or approval record to be for the aggregate and
// contributors its round closed with (d nil: not in the export).
func (d *decryptingRound) checkSet(r *Record) error {
	switch {
	case d == nil:
		return nil
	case r.Details["aggregate_digest"] != d.aggregate:
		return fmt.Errorf("made for aggregate %.16s…, round %d closed with %.16s…", r.Details["aggregate_digest"], r.Round, d.aggregate)
	case !slices.Equal(sortedNames(r.Details["contributors"]), d.contributors):
		return fmt.Errorf("made for contributors %s, round %d closed with %v", r.Details["contributors"], r.Round, d.contributors)
	}
	return nil
}

// roundStatement is what a hospital's signed round statement in a record
// carries: its signature, its certificate, the region's digest and the
// round's binding.
type roundStatement struct {
	sig, cert, region []byte
	binding           [32]byte
}

// signedRound reads a round statement's signature, certificate and region
// from a record's details, and rebuilds the round's binding from its job,
// round, model version, model hash and model digest.
func signedRound(r *Record) (roundStatement, error) {
	var st roundStatement
	var err error
	if st.sig, err = hexDetail(r, "signature"); err != nil {
		return st, err
	}
	if st.cert, err = hexDetail(r, "certificate"); err != nil {
		return st, err
	}
	if st.region, err = hexDetail(r, "region_digest"); err != nil {
		return st, err
	}
	version, err := strconv.ParseUint(r.Details["model_version"], 10, 32)
	if err != nil {
		return st, errors.New("details[model_version] is not a number")
	}
	// The digest of the model the round trained from; records written
	// before it was kept, and statistics rounds, have none.
	var model [32]byte
	if m, ok := r.Details["model_digest"]; ok {
		b, err := sha256Hex(m, "details[model_digest]")
		if err != nil {
			return st, err
		}
		copy(model[:], b)
	}
	st.binding = jobspec.Binding(r.JobID, r.Round, uint32(version), r.ModelHash, model)
	return st, nil
}

// hexDetail decodes a record's detail k, which must be non-empty hex.
func hexDetail(r *Record, k string) ([]byte, error) {
	b, err := hex.DecodeString(r.Details[k])
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("details[%s] is not hex", k)
	}
	return b, nil
}

// sha256Hex decodes the hex of a SHA-256 (what names the field).
func sha256Hex(s, what string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("%s is not a SHA-256", what)
	}
	return b, nil
}

// checkJob verifies a job submission's signed statement
// (identity.StatementJob): the certificate names the record's actor, a
// researcher (and chains to roots, when given), and its key signed the
// spec digest and request id the record holds. (The spec itself is not in
// the log: its digest is what the nodes pinned.)
func checkJob(r *Record, roots *x509.CertPool) error {
	sig, err := hexDetail(r, "signature")
	if err != nil {
		return err
	}
	cert, err := hexDetail(r, "certificate")
	if err != nil {
		return err
	}
	digest, err := sha256Hex(r.Details["spec_digest"], "details[spec_digest]")
	if err != nil {
		return err
	}
	want := identity.Identity{Name: r.Actor, Role: identity.Role(r.Role)}
	if want.Role != identity.RoleResearcher {
		return fmt.Errorf("submitted by a %s, not a researcher", r.Role)
	}
	return checkStatement(r, roots, want, cert, sig, identity.StatementJob, identity.JobFields(digest, r.Details["request_id"])...)
}

// checkStatement checks that cert is want's (issued by roots at the
// record's time, when roots is given) and that its key signed (kind,
// fields...).
func checkStatement(r *Record, roots *x509.CertPool, want identity.Identity, cert, sig []byte, kind string, fields ...[]byte) error {
	if roots != nil {
		return identity.VerifyStatement(roots, cert, want, time.UnixMilli(r.TimeUnixMs), sig, kind, fields...)
	}
	c, err := x509.ParseCertificate(cert)
	if err != nil {
		return fmt.Errorf("certificate: %v", err)
	}
	if id, err := identity.FromCertificate(c); err != nil || id != want {
		return fmt.Errorf("certificate is not %s's", want)
	}
	return identity.CheckSignature(cert, sig, kind, fields...)
}

func seqRange(a, b uint64) string {
	if a == b {
		return fmt.Sprintf("record seq %d is", a)
	}
	return fmt.Sprintf("records seq %d to %d are", a, b)
}
