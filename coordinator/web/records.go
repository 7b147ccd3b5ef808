package web

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"regionfl/audit"
	"regionfl/coordinator/fsm"
)

// recordsPerPage is how many audit records one page of /audit/records
// shows.
var recordsPerPage = 50

// recordQuery is what a compliance officer filters the audit records by:
// a job, a hospital or actor, an action, a time window. Job and window
// are also the filter of a verifiable export (audit.Filter); who and
// action narrow the page only.
type recordQuery struct {
	Job, Who, Action string
	Since, Until     string // as typed: a date, a date and time, or RFC 3339
	Page             int    // from 1

	sinceMs, untilMs int64
}

// timeLayouts are the forms a since/until field may take (UTC unless the
// value says otherwise).
var timeLayouts = []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"}

func parseQueryTime(field, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			if t.Before(time.UnixMilli(0)) {
				return 0, fmt.Errorf("%s: %q is before 1970", field, s)
			}
			return t.UnixMilli(), nil
		}
	}
	return 0, fmt.Errorf("%s: %q is not a date (2006-01-02), a date and time (2006-01-02T15:04) or RFC 3339", field, s)
}

// parseRecordQuery reads and checks the query string; the error names the
// field.
func parseRecordQuery(v url.Values) (recordQuery, error) {
	q := recordQuery{Job: strings.TrimSpace(v.Get("job")), Who: strings.TrimSpace(v.Get("who")),
		Action: strings.TrimSpace(v.Get("action")), Since: strings.TrimSpace(v.Get("since")), Until: strings.TrimSpace(v.Get("until")), Page: 1}
	for name, s := range map[string]string{"job": q.Job, "who": q.Who} {
		if len(s) > audit.MaxFieldBytes || !utf8.ValidString(s) {
			return q, fmt.Errorf("%s: not UTF-8 of at most %d bytes", name, audit.MaxFieldBytes)
		}
	}
	if q.Action != "" && !audit.Action(q.Action).Known() {
		return q, fmt.Errorf("action: %q is not an audit action", q.Action)
	}
	var err error
	if q.sinceMs, err = parseQueryTime("since", q.Since); err != nil {
		return q, err
	}
	if q.untilMs, err = parseQueryTime("until", q.Until); err != nil {
		return q, err
	}
	if q.untilMs != 0 && q.untilMs <= q.sinceMs {
		return q, fmt.Errorf("until: %q is not after since %q", q.Until, q.Since)
	}
	if p := v.Get("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 1<<20 {
			return q, fmt.Errorf("page: %q is not a page number", p)
		}
		q.Page = n
	}
	return q, nil
}

// filter is the verifiable part of the query.
func (q recordQuery) filter() audit.Filter {
	return audit.Filter{JobID: q.Job, SinceUnixMs: q.sinceMs, UntilUnixMs: q.untilMs}
}

func (q recordQuery) match(r *audit.Record) bool {
	return q.filter().Match(r) &&
		(q.Who == "" || r.Hospital == q.Who || r.Actor == q.Who || r.Role+"/"+r.Actor == q.Who) &&
		(q.Action == "" || string(r.Action) == q.Action)
}

// values is the query as URL parameters, page included when above 1.
func (q recordQuery) values(page int) url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"job": q.Job, "who": q.Who, "action": q.Action, "since": q.Since, "until": q.Until} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	return v
}

type recordRow struct {
	Seq                 uint64
	Time                string
	Actor, Role, Action string
	JobID               string
	Round               uint32
	Hospital            string
	Purpose, LegalBasis string
	Digest, Reason      string
	ProofURL            string
	UnderCheckpoint     bool
	DetailKeys          []string
	Details             map[string]string
}

type recordsView struct {
	Query            recordQuery
	Actions          []string
	Rows             []recordRow
	Matched, Total   int
	Page, Pages      int
	PrevURL, NextURL string
	ExportURL        string
	ExportNarrowed   bool // who or action narrow the page, not the export
	CheckpointSize   uint64
	Err              string
}

// records serves GET /audit/records: the audit log, newest first, filtered
// and paginated.
func (s *Server) records(w http.ResponseWriter, r *http.Request) {
	v := recordsView{Page: 1}
	for _, a := range audit.Actions {
		v.Actions = append(v.Actions, string(a))
	}
	slices.Sort(v.Actions)
	q, err := parseRecordQuery(r.URL.Query())
	v.Query = q
	if err != nil {
		v.Err = err.Error()
		s.render(w, r, http.StatusBadRequest, "records", "Audit records", 0, v)
		return
	}
	var matched []audit.Record
	s.cfg.State(func(st *fsm.State) {
		if st.Audit == nil {
			return
		}
		n := st.Audit.Len()
		v.Total = int(n)
		if cps := st.Audit.Checkpoints(); len(cps) > 0 {
			v.CheckpointSize = cps[len(cps)-1].Size
		}
		for i := n; i > 0; i-- { // newest first
			rec, err := st.Audit.Record(i - 1)
			if err == nil && q.match(&rec) {
				matched = append(matched, rec)
			}
		}
	})
	v.Matched = len(matched)
	v.Pages = max(1, (len(matched)+recordsPerPage-1)/recordsPerPage)
	v.Page = min(q.Page, v.Pages)
	for _, rec := range matched[(v.Page-1)*recordsPerPage : min(len(matched), v.Page*recordsPerPage)] {
		row := recordRow{Seq: rec.Seq, Time: time.UnixMilli(rec.TimeUnixMs).UTC().Format("2006-01-02 15:04:05.000Z"),
			Actor: rec.Actor, Role: rec.Role, Action: string(rec.Action), JobID: rec.JobID, Round: rec.Round,
			Hospital: rec.Hospital, Purpose: rec.Purpose, LegalBasis: rec.LegalBasis, Digest: rec.Digest, Reason: rec.Reason,
			UnderCheckpoint: rec.Seq < v.CheckpointSize, ProofURL: fmt.Sprintf("/audit/records/%d/proof", rec.Seq),
			Details: map[string]string{}}
		for k, d := range rec.Details {
			if k == "signature" || k == "certificate" {
				continue // long hex; in the export and the proof
			}
			row.DetailKeys = append(row.DetailKeys, k)
			row.Details[k] = d
		}
		slices.Sort(row.DetailKeys)
		v.Rows = append(v.Rows, row)
	}
	if v.Page > 1 {
		v.PrevURL = "/audit/records?" + q.values(v.Page-1).Encode()
	}
	if v.Page < v.Pages {
		v.NextURL = "/audit/records?" + q.values(v.Page+1).Encode()
	}
	if s.cfg.SignHead != nil && v.Total > 0 {
		ev := url.Values{}
		for k, s := range map[string]string{"job": q.Job, "since": q.Since, "until": q.Until} {
			if s != "" {
				ev.Set(k, s)
			}
		}
		v.ExportURL = "/audit/export?" + ev.Encode()
		v.ExportNarrowed = q.Who != "" || q.Action != ""
	}
	s.render(w, r, http.StatusOK, "records", "Audit records", 0, v)
}

// recordProof is a record with its inclusion proof under the last signed
// checkpoint that covers it.
type recordProof struct {
	Record     audit.Record    `json:"record"`
	LeafHash   string          `json:"leaf_hash"`
	Proof      audit.ProofJSON `json:"proof"`
	Checkpoint audit.TreeHead  `json:"checkpoint"`
}

// recordProofJSON serves GET /audit/records/{seq}/proof.
func (s *Server) recordProofJSON(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "seq: not a record number")
		return
	}
	var (
		out    recordProof
		status = http.StatusOK
		msg    string
	)
	s.cfg.State(func(st *fsm.State) {
		if st.Audit == nil || seq >= st.Audit.Len() {
			status, msg = http.StatusNotFound, "No audit record with this number."
			return
		}
		cps := st.Audit.Checkpoints()
		if len(cps) == 0 || cps[len(cps)-1].Size <= seq {
			status, msg = http.StatusNotFound, "This record is not under a signed checkpoint yet: the leader signs one every few records; try again shortly."
			return
		}
		cp := cps[len(cps)-1]
		rec, err1 := st.Audit.Record(seq)
		leaf, err2 := st.Audit.LeafHash(seq)
		proof, err3 := st.Audit.InclusionProof(seq, cp.Size)
		if err1 != nil || err2 != nil || err3 != nil {
			status, msg = http.StatusInternalServerError, "The proof could not be built."
			return
		}
		hashes := make([]string, len(proof))
		for i, h := range proof {
			hashes[i] = hex.EncodeToString(h[:])
		}
		out = recordProof{Record: rec, LeafHash: leaf.String(), Checkpoint: cp,
			Proof: audit.ProofJSON{LeafIndex: seq, TreeSize: cp.Size, Hashes: hashes}}
	})
	if status != http.StatusOK {
		s.fail(w, r, status, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

// export serves GET /audit/export: the records of a job and time window as
// the JSON Lines `regionfl audit verify` checks, closed by a head this
// replica signs now (Config.SignHead).
func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	if s.cfg.SignHead == nil {
		s.fail(w, r, http.StatusNotFound, "This replica does not sign audit exports.")
		return
	}
	q, err := parseRecordQuery(r.URL.Query())
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var l *audit.Log
	s.cfg.State(func(st *fsm.State) { l = st.Audit })
	if l == nil || l.Len() == 0 {
		s.fail(w, r, http.StatusNotFound, "The audit log is empty.")
		return
	}
	head, err := s.cfg.SignHead(l, l.Len())
	if err != nil {
		s.log.Error("web: sign audit head", "err", err)
		s.fail(w, r, http.StatusInternalServerError, "The export head could not be signed.")
		return
	}
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("Content-Disposition", `attachment; filename="audit-export.jsonl"`)
	if err := audit.Export(w, l, q.filter(), l.Checkpoints(), head); err != nil {
		s.log.Error("web: audit export", "err", err)
	}
}
