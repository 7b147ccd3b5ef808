package audit

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"regionfl/identity"
	"regionfl/jobspec"
)

// ---------------------------------------------------------------------------
// Merkle tree: RFC 6962/9162 vectors and a naive reference implementation.

// The Certificate Transparency test leaves and roots (RFC 6962 reference
// implementation, also used by RFC 9162 implementations).
var ctLeaves = []string{"", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"}

var ctRoots = []string{
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
	"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
	"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

func ctTree(t *testing.T) *tree {
	t.Helper()
	tr := &tree{}
	for _, s := range ctLeaves {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		tr.append(HashLeaf(b))
	}
	return tr
}

func mustHashes(t *testing.T, ss ...string) []Hash {
	t.Helper()
	out := make([]Hash, len(ss))
	for i, s := range ss {
		h, err := ParseHash(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = h
	}
	return out
}

func TestRFC6962Vectors(t *testing.T) {
	tr := ctTree(t)
	for n := range ctRoots {
		r, err := tr.root(uint64(n))
		if err != nil {
			t.Fatal(err)
		}
		if r.String() != ctRoots[n] {
			t.Errorf("root of size %d = %s, want %s", n, r, ctRoots[n])
		}
	}
	root8 := mustHashes(t, ctRoots[8])[0]
	for _, v := range []struct {
		index uint64
		proof []string
	}{
		{0, []string{"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
			"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
		{5, []string{"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
			"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
			"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
	} {
		p, err := tr.inclusion(v.index, 8)
		if err != nil {
			t.Fatal(err)
		}
		if got := hexes(p); !slices.Equal(got, v.proof) {
			t.Errorf("inclusion(%d, 8) = %v, want %v", v.index, got, v.proof)
		}
		if err := VerifyInclusion(tr.levels[0][v.index], v.index, 8, mustHashes(t, v.proof...), root8); err != nil {
			t.Errorf("inclusion vector %d: %v", v.index, err)
		}
	}
	for _, v := range []struct {
		first uint64
		proof []string
	}{
		{2, []string{"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
		{6, []string{"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
			"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
			"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
	} {
		p, err := tr.consistency(v.first, 8)
		if err != nil {
			t.Fatal(err)
		}
		if got := hexes(p); !slices.Equal(got, v.proof) {
			t.Errorf("consistency(%d, 8) = %v, want %v", v.first, got, v.proof)
		}
		first := mustHashes(t, ctRoots[v.first])[0]
		if err := VerifyConsistency(v.first, 8, first, root8, mustHashes(t, v.proof...)); err != nil {
			t.Errorf("consistency vector %d: %v", v.first, err)
		}
	}
}

// The reference: RFC 9162 §2.1 written as literally as possible, over
// leaf hashes.
func refMTH(d []Hash) Hash {
	switch len(d) {
	case 0:
		return EmptyRoot
	case 1:
		return d[0]
	}
	k := splitPoint(uint64(len(d)))
	return hashChildren(refMTH(d[:k]), refMTH(d[k:]))
}

func refPath(m int, d []Hash) []Hash {
	if len(d) <= 1 {
		return nil
	}
	k := int(splitPoint(uint64(len(d))))
	if m < k {
		return append(refPath(m, d[:k]), refMTH(d[k:]))
	}
	return append(refPath(m-k, d[k:]), refMTH(d[:k]))
}

func refSubproof(m int, d []Hash, b bool) []Hash {
	n := len(d)
	if m == n {
		if b {
			return nil
		}
		return []Hash{refMTH(d)}
	}
	k := int(splitPoint(uint64(n)))
	if m <= k {
		return append(refSubproof(m, d[:k], b), refMTH(d[k:]))
	}
	return append(refSubproof(m-k, d[k:], false), refMTH(d[:k]))
}

func TestTreeAgainstReference(t *testing.T) {
	const max = 64
	var leaves []Hash
	tr := &tree{}
	for i := range max {
		h := HashLeaf([]byte(fmt.Sprintf("leaf %d", i)))
		leaves = append(leaves, h)
		tr.append(h)
	}
	roots := make([]Hash, max+1)
	for n := 0; n <= max; n++ {
		roots[n] = refMTH(leaves[:n])
		got, err := tr.root(uint64(n))
		if err != nil || got != roots[n] {
			t.Fatalf("root(%d) = %s, %v; reference %s", n, got, err, roots[n])
		}
	}
	bad := Hash{0xab}
	for n := 1; n <= max; n++ {
		for m := 0; m < n; m++ {
			want := refPath(m, leaves[:n])
			got, err := tr.inclusion(uint64(m), uint64(n))
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("inclusion(%d, %d) differs from the reference: %v", m, n, err)
			}
			if err := VerifyInclusion(leaves[m], uint64(m), uint64(n), got, roots[n]); err != nil {
				t.Fatalf("inclusion(%d, %d) does not verify: %v", m, n, err)
			}
			// The proof is bound to the leaf, its index, the size and the root.
			if VerifyInclusion(bad, uint64(m), uint64(n), got, roots[n]) == nil {
				t.Fatalf("inclusion(%d, %d) verifies another leaf", m, n)
			}
			for m2 := 0; m2 < n; m2++ {
				if m2 != m && leaves[m2] != leaves[m] && VerifyInclusion(leaves[m], uint64(m2), uint64(n), got, roots[n]) == nil {
					t.Fatalf("inclusion(%d, %d) verifies at index %d", m, n, m2)
				}
			}
			if n > 1 && VerifyInclusion(leaves[m], uint64(m), uint64(n), got, roots[n-1]) == nil {
				t.Fatalf("inclusion(%d, %d) verifies against root %d", m, n, n-1)
			}
			if len(got) > 0 {
				if VerifyInclusion(leaves[m], uint64(m), uint64(n), got[:len(got)-1], roots[n]) == nil {
					t.Fatalf("truncated inclusion(%d, %d) verifies", m, n)
				}
				flipped := slices.Clone(got)
				flipped[0][3] ^= 1
				if VerifyInclusion(leaves[m], uint64(m), uint64(n), flipped, roots[n]) == nil {
					t.Fatalf("altered inclusion(%d, %d) verifies", m, n)
				}
			}
			if VerifyInclusion(leaves[m], uint64(m), uint64(n), append(slices.Clone(got), bad), roots[n]) == nil {
				t.Fatalf("extended inclusion(%d, %d) verifies", m, n)
			}
		}
		for m := 0; m <= n; m++ {
			var want []Hash
			if m > 0 && m < n {
				want = refSubproof(m, leaves[:n], true)
			}
			got, err := tr.consistency(uint64(m), uint64(n))
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("consistency(%d, %d) differs from the reference: %v", m, n, err)
			}
			if err := VerifyConsistency(uint64(m), uint64(n), roots[m], roots[n], got); err != nil {
				t.Fatalf("consistency(%d, %d) does not verify: %v", m, n, err)
			}
			if m == 0 {
				continue
			}
			if VerifyConsistency(uint64(m), uint64(n), bad, roots[n], got) == nil ||
				VerifyConsistency(uint64(m), uint64(n), roots[m], bad, got) == nil {
				t.Fatalf("consistency(%d, %d) verifies a wrong root", m, n)
			}
			if len(got) > 0 {
				if VerifyConsistency(uint64(m), uint64(n), roots[m], roots[n], got[:len(got)-1]) == nil {
					t.Fatalf("truncated consistency(%d, %d) verifies", m, n)
				}
				flipped := slices.Clone(got)
				flipped[len(flipped)-1][0] ^= 0x80
				if VerifyConsistency(uint64(m), uint64(n), roots[m], roots[n], flipped) == nil {
					t.Fatalf("altered consistency(%d, %d) verifies", m, n)
				}
			}
			if VerifyConsistency(uint64(m), uint64(n), roots[m], roots[n], append(slices.Clone(got), bad)) == nil {
				t.Fatalf("extended consistency(%d, %d) verifies", m, n)
			}
		}
	}
	if _, err := tr.inclusion(max, max); err == nil {
		t.Error("inclusion of a leaf beyond the tree")
	}
	if _, err := tr.consistency(3, max+1); err == nil {
		t.Error("consistency beyond the tree")
	}
}

// ---------------------------------------------------------------------------
// A region: a CA, a coordinator certificate and a log.

var (
	pkiOnce sync.Once
	testCA  *identity.CA
	coord   tls.Certificate
	pkiErr  error
)

func pki(t testing.TB) (*identity.CA, tls.Certificate) {
	t.Helper()
	pkiOnce.Do(func() {
		testCA, pkiErr = identity.NewCA("test", time.Hour)
		if pkiErr == nil {
			coord, pkiErr = testCA.Issue(identity.Identity{Name: "replica-1", Role: identity.RoleCoordinator}, time.Hour)
		}
	})
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return testCA, coord
}

func signHead(t testing.TB, l *Log, cert tls.Certificate, size uint64) TreeHead {
	t.Helper()
	th, err := l.SignHead(cert.PrivateKey.(crypto.Signer), cert.Certificate[0], size, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	return th
}

var testBase = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC).UnixMilli()

var jobs = []string{"job-a", "job-b", "job-c"}

// sampleRecord is record i of the test log: region records, then three
// interleaved jobs, with times that sometimes repeat.
func sampleRecord(i int) Record {
	r := Record{TimeUnixMs: testBase + int64(i/2)*1000, Actor: "replica-1", Role: "coordinator"}
	switch {
	case i == 0:
		r.Action, r.Actor, r.Role = ActionRegionCreated, "ops", "operator"
	case i < 4:
		r.Action, r.Actor, r.Role = ActionCeremonyEnrolled, fmt.Sprintf("hospital-%d", i), "hospital"
		r.Details = map[string]string{"point": fmt.Sprint(i)}
	default:
		j := jobs[i%len(jobs)]
		r.JobID, r.Purpose, r.LegalBasis = j, "predict readmission <30 days", "permit DP-2026-"+j
		switch i % 5 {
		case 0:
			r.Action, r.Actor, r.Role = ActionJobSubmitted, "alice", "researcher"
		case 1:
			r.Action, r.Hospital, r.Actor, r.Role = ActionJobAccepted, "hospital-1", "hospital-1", "hospital"
		case 2:
			r.Action, r.Round = ActionRoundOpened, uint32(i)
		case 3:
			r.Action, r.Round, r.Hospital, r.Actor, r.Role = ActionContributionAccepted, uint32(i), "hospital-2", "hospital-2", "hospital"
			r.Digest, r.Size = fmt.Sprintf("%064x", i), uint64(1000+i)
		case 4:
			r.Action, r.Round, r.ModelHash = ActionModelCommitted, uint32(i), fmt.Sprintf("%064x", i*7)
			r.Reason = "quorum & threshold reached: \"ok\""
		}
	}
	return r
}

type fixture struct {
	log   *Log
	final TreeHead
}

// newFixture builds a log of n records with a checkpoint every 10.
func newFixture(t testing.TB, n int) fixture {
	t.Helper()
	_, cert := pki(t)
	l := &Log{}
	for i := range n {
		if _, err := l.Append(sampleRecord(i)); err != nil {
			t.Fatal(err)
		}
		if (i+1)%10 == 0 {
			if err := l.AddCheckpoint(signHead(t, l, cert, l.Len())); err != nil {
				t.Fatal(err)
			}
		}
	}
	return fixture{log: l, final: signHead(t, l, cert, l.Len())}
}

func (fx fixture) export(t testing.TB, f Filter) string {
	t.Helper()
	var b bytes.Buffer
	if err := Export(&b, fx.log, f, fx.log.Checkpoints(), fx.final); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func verify(t testing.TB, export string) (Report, error) {
	t.Helper()
	ca, _ := pki(t)
	return Verify(strings.NewReader(export), ca.Pool())
}

func mustVerify(t testing.TB, export string) Report {
	t.Helper()
	rep, err := verify(t, export)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, export)
	}
	return rep
}

// mustFail checks that verification fails and names line (1-based; 0 = any).
func mustFail(t testing.TB, export string, line int, what string) *VerifyError {
	t.Helper()
	_, err := verify(t, export)
	if err == nil {
		t.Fatalf("%s: verification passed", what)
	}
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("%s: error %T %v is not a *VerifyError", what, err, err)
	}
	if line != 0 && ve.Line != line {
		t.Fatalf("%s: error names line %d, want %d: %v", what, ve.Line, line, err)
	}
	return ve
}

func lines(s string) []string    { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }
func unlines(ls []string) string { return strings.Join(ls, "\n") + "\n" }

func lineType(t testing.TB, l string) string {
	var x struct{ Type string }
	if err := json.Unmarshal([]byte(l), &x); err != nil {
		t.Fatal(err)
	}
	return x.Type
}

// ---------------------------------------------------------------------------
// The log.

func TestAppend(t *testing.T) {
	l := &Log{}
	r0, err := l.Append(Record{TimeUnixMs: 5000, Actor: "ops", Role: "operator", Action: ActionRegionCreated})
	if err != nil {
		t.Fatal(err)
	}
	if r0.Seq != 0 || r0.PrevHash != zeroHashHex || r0.PrevJobSeq != -1 {
		t.Fatalf("first record: %+v", r0)
	}
	r1, err := l.Append(Record{TimeUnixMs: 4000, Actor: "alice", Role: "researcher", Action: ActionJobSubmitted, JobID: "j1", PrevJobSeq: 42, Seq: 9})
	if err != nil {
		t.Fatal(err)
	}
	h0, _ := l.LeafHash(0)
	if r1.Seq != 1 || r1.PrevHash != h0.String() || r1.PrevJobSeq != -1 || r1.TimeUnixMs != 5000 {
		t.Fatalf("second record (time must be raised to 5000): %+v", r1)
	}
	l.Append(Record{TimeUnixMs: 6000, Actor: "ops", Role: "operator", Action: ActionReplicaJoined})
	r3, _ := l.Append(Record{TimeUnixMs: 7000, Actor: "hospital-1", Role: "hospital", Action: ActionJobAccepted, JobID: "j1"})
	if r3.PrevJobSeq != 1 {
		t.Fatalf("prev_job_seq = %d, want 1", r3.PrevJobSeq)
	}
	for _, bad := range []Record{
		{TimeUnixMs: 1, Actor: "ops", Role: "operator", Action: "job.exploded"},
		{TimeUnixMs: 0, Actor: "ops", Role: "operator", Action: ActionRegionCreated},
		{TimeUnixMs: 1, Actor: "Ops!", Role: "operator", Action: ActionRegionCreated},
		{TimeUnixMs: 1, Actor: "ops", Role: "king", Action: ActionRegionCreated},
		{TimeUnixMs: 1, Actor: "ops", Role: "operator", Action: ActionRegionCreated, Reason: "\xff"},
		{TimeUnixMs: 1, Actor: "ops", Role: "operator", Action: ActionRegionCreated, Reason: strings.Repeat("x", MaxFieldBytes+1)},
		{TimeUnixMs: 1, Actor: "ops", Role: "operator", Action: ActionRegionCreated, Details: map[string]string{"hospitals": strings.Repeat("x", MaxDetailBytes+1)}},
	} {
		if _, err := l.Append(bad); err == nil {
			t.Errorf("appended invalid record %.200v", bad)
		}
	}
	if l.Len() != 4 {
		t.Fatalf("len %d after refusals", l.Len())
	}
	// Record returns a copy.
	r, _ := l.Record(0)
	r.Actor = "mallory"
	if r, _ := l.Record(0); r.Actor != "ops" {
		t.Fatal("Record exposes the stored record")
	}
}

func TestEncodingIsInjective(t *testing.T) {
	a := sampleRecord(13)
	a.PrevHash, a.PrevJobSeq = zeroHashHex, -1
	a.Seq = 20
	b := a
	b.Purpose, b.LegalBasis = a.Purpose+a.LegalBasis[:1], a.LegalBasis[1:]
	ha, err := a.LeafHash()
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := b.LeafHash()
	if ha == hb {
		t.Fatal("moving bytes between fields keeps the hash")
	}
	c := a
	c.Details = map[string]string{}
	if hc, _ := c.LeafHash(); hc != ha {
		t.Fatal("empty and absent details hash differently")
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	fx := newFixture(t, 57)
	b, err := json.Marshal(fx.log)
	if err != nil {
		t.Fatal(err)
	}
	var l2 Log
	if err := json.Unmarshal(b, &l2); err != nil {
		t.Fatal(err)
	}
	if l2.Root() != fx.log.Root() || l2.Len() != 57 || len(l2.Checkpoints()) != 5 {
		t.Fatal("restored log differs")
	}
	c1, _ := fx.log.CommitmentAt(57)
	c2, _ := l2.CommitmentAt(57)
	if c1 != c2 {
		t.Fatal("restored job index differs")
	}
	// The restored log keeps appending the same way.
	r1, _ := fx.log.Append(sampleRecord(57))
	r2, _ := l2.Append(sampleRecord(57))
	if r1.PrevJobSeq != r2.PrevJobSeq || fx.log.Root() != l2.Root() {
		t.Fatal("restored log appends differently")
	}

	var empty Log
	eb, _ := json.Marshal(&empty)
	if err := json.Unmarshal(eb, &l2); err != nil || l2.Len() != 0 || l2.Root() != EmptyRoot {
		t.Fatalf("empty snapshot: %v", err)
	}

	for name, edit := range map[string]func(string) string{
		"record field": func(s string) string { return strings.Replace(s, `"actor":"alice"`, `"actor":"mallory"`, 1) },
		"time": func(s string) string {
			return strings.Replace(s, fmt.Sprintf(`"time_unix_ms":%d`, testBase+3000), `"time_unix_ms":1`, 1)
		},
		"root":         func(s string) string { return strings.Replace(s, `"root_hash":"`, `"root_hash":"0`, 1) },
		"prev_job_seq": func(s string) string { return strings.Replace(s, `"prev_job_seq":4,`, `"prev_job_seq":3,`, 1) },
		"size":         func(s string) string { return strings.Replace(s, `"size":57`, `"size":56`, 1) },
		"unknown":      func(s string) string { return strings.Replace(s, `"version":1`, `"version":1,"x":1`, 1) },
		"checkpoint":   func(s string) string { return strings.Replace(s, `{"size":10,`, `{"size":11,`, 1) },
	} {
		s := edit(string(b))
		if s == string(b) {
			t.Fatalf("%s: edit did not apply", name)
		}
		var l3 Log
		if err := json.Unmarshal([]byte(s), &l3); !errors.Is(err, ErrSnapshot) {
			t.Errorf("%s: restore of an edited snapshot: %v", name, err)
		}
	}
}

// ---------------------------------------------------------------------------
// Exports.

func TestFullExportVerifies(t *testing.T) {
	fx := newFixture(t, 57)
	exp := fx.export(t, Filter{})
	rep := mustVerify(t, exp)
	if rep.Records != 57 || rep.Boundaries != 0 || rep.TreeSize != 57 || rep.Checkpoints != 5 ||
		!rep.CAChecked || rep.Signer.Name != "replica-1" || rep.FirstSeq != 0 || rep.LastSeq != 56 {
		t.Fatalf("report %+v", rep)
	}
	// Without a CA it still verifies, but says so.
	rep, err := Verify(strings.NewReader(exp), nil)
	if err != nil || rep.CAChecked {
		t.Fatalf("without CA: %v %+v", err, rep)
	}
	// An export whose final head is older than the log, with its checkpoints.
	_, cert := pki(t)
	old := signHead(t, fx.log, cert, 33)
	var b bytes.Buffer
	if err := Export(&b, fx.log, Filter{}, fx.log.Checkpoints(), old); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, b.String()); rep.Records != 33 || rep.Checkpoints != 3 {
		t.Fatalf("old head: %+v", rep)
	}
}

func TestEmptyLogExportVerifies(t *testing.T) {
	_, cert := pki(t)
	l := &Log{}
	final := signHead(t, l, cert, 0)
	for _, f := range []Filter{{}, {JobID: "job-a"}, {SinceUnixMs: 5}} {
		var b bytes.Buffer
		if err := Export(&b, l, f, nil, final); err != nil {
			t.Fatal(err)
		}
		if rep := mustVerify(t, b.String()); rep.Records != 0 || rep.TreeSize != 0 {
			t.Fatalf("%v: %+v", f, rep)
		}
	}
}

// mutateByte changes one byte of a JSON value to another of the same kind,
// so the line stays valid JSON.
func mutateByte(c byte) byte {
	switch {
	case c >= '0' && c <= '8':
		return c + 1
	case c == '9':
		return '0'
	case c >= 'a' && c < 'z', c >= 'A' && c < 'Z':
		return c + 1
	case c == 'z':
		return 'a'
	case c == 'Z':
		return 'A'
	case c == '-':
		return '7'
	}
	return 'x'
}

func TestEditedRecordFieldDetected(t *testing.T) {
	fx := newFixture(t, 40)
	exp := lines(fx.export(t, Filter{}))
	fields := map[string]bool{}
	for i, ln := range exp {
		if lineType(t, ln) != lineRecord {
			continue
		}
		start := strings.Index(ln, `"record":{`) + len(`"record":`)
		end := strings.Index(ln, `,"proof":`)
		rec := ln[start:end]
		// Every value byte after each key: the first and the last byte of
		// every field's value, and one byte inside the details.
		for pos := 0; pos < len(rec); pos++ {
			if rec[pos] != ':' {
				continue
			}
			key := rec[strings.LastIndex(rec[:pos-1], `"`)+1 : pos-1]
			fields[key] = true
			valStart := pos + 1
			if rec[valStart] == '"' {
				valStart++
			}
			if rec[valStart] == '{' || rec[valStart] == '"' {
				continue // details object (its entries are visited) or empty
			}
			valEnd := valStart
			for valEnd < len(rec) && rec[valEnd] != '"' && rec[valEnd] != ',' && rec[valEnd] != '}' {
				valEnd++
			}
			for _, p := range []int{valStart, valEnd - 1} {
				b := []byte(rec)
				b[p] = mutateByte(b[p])
				edited := slices.Clone(exp)
				edited[i] = ln[:start] + string(b) + ln[end:]
				ve := mustFail(t, unlines(edited), i+1, fmt.Sprintf("line %d field %s byte %d", i+1, key, p))
				if json.Valid([]byte(edited[i])) && !strings.Contains(ve.Subject, "seq") {
					t.Fatalf("error does not name the record: %v", ve)
				}
			}
		}
		// A byte of a key: "actor" -> "actos".
		edited := slices.Clone(exp)
		edited[i] = strings.Replace(ln, `"actor":`, `"actos":`, 1)
		mustFail(t, unlines(edited), i+1, "edited key")
		// Same meaning, different spelling: "Actor" is accepted by
		// encoding/json, but not canonical.
		edited[i] = strings.Replace(ln, `"actor":`, `"Actor":`, 1)
		mustFail(t, unlines(edited), i+1, "key case")
	}
	for _, f := range []string{"seq", "prev_hash", "time_unix_ms", "actor", "role", "action", "job_id", "prev_job_seq",
		"round", "hospital", "purpose", "legal_basis", "digest", "size", "model_hash", "reason", "details", "point"} {
		if !fields[f] {
			t.Errorf("field %s never edited", f)
		}
	}
	// The canonical message for a plain edit.
	edited := slices.Clone(exp)
	edited[12] = strings.Replace(edited[12], `"actor":"replica-1"`, `"actor":"replica-2"`, 1)
	if edited[12] == exp[12] {
		t.Fatal("no replica-1 actor on line 13")
	}
	ve := mustFail(t, unlines(edited), 13, "edited actor")
	if !strings.Contains(ve.Error(), "inclusion proof does not match the signed head") {
		t.Fatalf("message: %v", ve)
	}
	t.Logf("edited actor: %v", ve)
}

func TestDeletedRecordDetected(t *testing.T) {
	fx := newFixture(t, 30)
	exp := lines(fx.export(t, Filter{}))
	for i, ln := range exp {
		typ := lineType(t, ln)
		if typ == lineHeader {
			continue
		}
		deleted := slices.Delete(slices.Clone(exp), i, i+1)
		want := i + 1 // the line that took its place
		switch {
		case typ == lineRecord && i == len(exp)-2:
			want = i // the new last record: the log goes on
		case typ == lineHead:
			want = i + 1 // end of file
		case typ == lineCheckpoint:
			// Dropping a checkpoint is not tampering with the log: the
			// remaining ones still verify.
			if _, err := verify(t, unlines(deleted)); err != nil {
				t.Fatalf("without checkpoint line %d: %v", i+1, err)
			}
			continue
		}
		ve := mustFail(t, unlines(deleted), want, fmt.Sprintf("deleted line %d (%s)", i+1, typ))
		if i == 10 {
			t.Logf("deleted record: %v", ve)
		}
	}
}

func TestSwappedRecordsDetected(t *testing.T) {
	fx := newFixture(t, 30)
	exp := lines(fx.export(t, Filter{}))
	first := slices.IndexFunc(exp, func(l string) bool { return lineType(t, l) == lineRecord })
	for i := first; i+1 < len(exp)-1; i++ {
		for _, j := range []int{i + 1, min(i+5, len(exp)-2)} {
			if j == i {
				continue
			}
			sw := slices.Clone(exp)
			sw[i], sw[j] = sw[j], sw[i]
			ve := mustFail(t, unlines(sw), i+1, fmt.Sprintf("swapped lines %d and %d", i+1, j+1))
			if i == first+3 && j == i+1 {
				t.Logf("swapped: %v", ve)
			}
		}
	}
	// Swapping the seqs inside two records (not the lines) is an edit.
	sw := slices.Clone(exp)
	sw[first+2] = strings.Replace(sw[first+2], `"seq":2,`, `"seq":3,`, 1)
	sw[first+3] = strings.Replace(sw[first+3], `"seq":3,`, `"seq":2,`, 1)
	mustFail(t, unlines(sw), first+3, "swapped seqs")
}

func TestTruncationDetected(t *testing.T) {
	fx := newFixture(t, 30)
	full := fx.export(t, Filter{})
	exp := lines(full)
	// Cut at every line boundary and in the middle of every line.
	for n := 1; n < len(exp); n++ {
		cut := unlines(exp[:n])
		mustFail(t, cut, 0, fmt.Sprintf("cut after line %d", n))
		mid := cut + exp[n][:len(exp[n])/2]
		mustFail(t, mid, n+1, fmt.Sprintf("cut inside line %d", n+1))
	}
	// Cut the records but keep the head.
	for n := 3; n < len(exp)-1; n++ {
		cut := append(slices.Clone(exp[:n]), exp[len(exp)-1])
		if lineType(t, exp[n-1]) != lineRecord {
			continue
		}
		ve := mustFail(t, unlines(cut), n, fmt.Sprintf("records cut after line %d", n))
		if n == len(exp)-4 {
			t.Logf("cut tail: %v", ve)
		}
	}
	// Cut the start: records after the header, without the first ones.
	first := slices.IndexFunc(exp, func(l string) bool { return lineType(t, l) == lineRecord })
	cut := append(slices.Clone(exp[:first]), exp[first+4:]...)
	mustFail(t, unlines(cut), first+1, "head of the log cut")
	// Data after the head.
	mustFail(t, full+exp[first]+"\n", len(exp)+1, "record after the head")
	// A line too long.
	mustFail(t, unlines(exp[:3])+strings.Repeat(" ", MaxLineBytes+1)+"\n", 4, "long line")
}

func TestFilteredExportsVerify(t *testing.T) {
	fx := newFixture(t, 80)
	n := int64(80)
	var filters []Filter
	for _, j := range append(jobs, "job-zzz", "a-job", "job-b0") {
		filters = append(filters, Filter{JobID: j})
	}
	for _, w := range [][2]int64{{0, 5}, {3, 9}, {10, 20}, {0, 1}, {39, 0}, {40, 0}, {-5, 2}, {15, 16}, {7, 0}, {1, 2}} {
		since, until := testBase+w[0]*1000, int64(0)
		if w[1] != 0 {
			until = testBase + w[1]*1000
		}
		if since < 0 {
			since = 0
		}
		filters = append(filters, Filter{SinceUnixMs: since, UntilUnixMs: until})
		for _, j := range jobs {
			filters = append(filters, Filter{JobID: j, SinceUnixMs: since, UntilUnixMs: until})
		}
	}
	for _, f := range filters {
		exp := fx.export(t, f)
		rep := mustVerify(t, exp)
		want := 0
		for i := range n {
			r, _ := fx.log.Record(uint64(i))
			if f.Match(&r) {
				want++
			}
		}
		if rep.Records != want || rep.Filter != f || rep.TreeSize != uint64(n) {
			t.Fatalf("%v: %d records, want %d (%+v)", f, rep.Records, want, rep)
		}
		// Deleting any record or boundary line, or the job index line, is
		// detected.
		ls := lines(exp)
		for i, ln := range ls {
			typ := lineType(t, ln)
			if typ != lineRecord && typ != lineBoundary && typ != lineJobIndex {
				continue
			}
			d := slices.Delete(slices.Clone(ls), i, i+1)
			if _, err := verify(t, unlines(d)); err == nil {
				t.Fatalf("%v: deleting line %d (%s) went unnoticed", f, i+1, typ)
			}
		}
	}
}

func TestFilteredDeletionNamesRecord(t *testing.T) {
	fx := newFixture(t, 60)
	exp := lines(fx.export(t, Filter{JobID: "job-b"}))
	first := slices.IndexFunc(exp, func(l string) bool { return lineType(t, l) == lineRecord })
	d := slices.Delete(slices.Clone(exp), first+3, first+4)
	ve := mustFail(t, unlines(d), first+4, "deleted job record")
	if !strings.Contains(ve.Msg, "missing") {
		t.Fatalf("message: %v", ve)
	}
	t.Logf("deleted job record: %v", ve)
	// Deleting the job's last record.
	d = slices.Delete(slices.Clone(exp), len(exp)-2, len(exp)-1)
	ve = mustFail(t, unlines(d), len(exp)-2, "deleted last job record")
	t.Logf("deleted last job record: %v", ve)
	// Deleting its first record.
	d = slices.Delete(slices.Clone(exp), first, first+1)
	mustFail(t, unlines(d), first+1, "deleted first job record")
	// A forged job index entry (claiming an earlier last record, to hide
	// the tail) does not match the signed job index.
	ji := slices.IndexFunc(exp, func(l string) bool { return lineType(t, l) == lineJobIndex })
	var jl jobIndexLine
	json.Unmarshal([]byte(exp[ji]), &jl)
	jl.Entries[0].LastSeq -= 3
	jb, _ := json.Marshal(jl)
	forged := append(slices.Clone(exp[:len(exp)-2]), exp[len(exp)-1])
	forged[ji] = string(jb)
	mustFail(t, unlines(forged), ji+1, "forged job index")
	// Replacing the filter in the header changes what is checked: the
	// report shows it.
	hdr := strings.Replace(exp[0], `"job_id":"job-b"`, `"job_id":"job-c"`, 1)
	mustFail(t, unlines(append([]string{hdr}, exp[1:]...)), 0, "header filter changed")

	// A time window: delete inside, at the edges.
	w := lines(fx.export(t, Filter{SinceUnixMs: testBase + 10_000, UntilUnixMs: testBase + 20_000}))
	if lineType(t, w[len(w)-2]) != lineBoundary {
		t.Fatal("no closing boundary")
	}
	first = slices.IndexFunc(w, func(l string) bool { return lineType(t, l) == lineBoundary })
	for i := first; i < len(w)-1; i++ {
		d := slices.Delete(slices.Clone(w), i, i+1)
		want := i + 1
		if i == len(w)-2 {
			want = i // the last record now claims to be the end
		}
		mustFail(t, unlines(d), want, fmt.Sprintf("window: deleted line %d", i+1))
	}
	// A boundary turned into a record does not match the filter.
	b := slices.Clone(w)
	b[first] = strings.Replace(b[first], `"type":"boundary"`, `"type":"record"`, 1)
	mustFail(t, unlines(b), first+1, "boundary as record")
}

func TestCheckpointTampering(t *testing.T) {
	fx := newFixture(t, 45)
	exp := lines(fx.export(t, Filter{}))
	cp := slices.IndexFunc(exp, func(l string) bool { return lineType(t, l) == lineCheckpoint }) + 1 // second checkpoint
	if lineType(t, exp[cp]) != lineCheckpoint {
		t.Fatal("no second checkpoint")
	}
	// A bad signature.
	var cl checkpointLine
	json.Unmarshal([]byte(exp[cp]), &cl)
	sig := []byte(cl.Head.Signature)
	sig[10] = mutateByte(sig[10])
	cl.Head.Signature = string(sig)
	b, _ := json.Marshal(cl)
	bad := slices.Clone(exp)
	bad[cp] = string(b)
	ve := mustFail(t, unlines(bad), cp+1, "bad checkpoint signature")
	if !strings.Contains(ve.Msg, "signature") {
		t.Fatalf("message: %v", ve)
	}
	t.Logf("bad checkpoint signature: %v", ve)

	// A signed checkpoint of another history (a fork at record 12): the
	// signature is good, consistency with the final head fails.
	_, cert := pki(t)
	fork := &Log{}
	for i := range 20 {
		r := sampleRecord(i)
		if i == 12 {
			r.Reason = "rewritten"
		}
		fork.Append(r)
	}
	fcp := signHead(t, fork, cert, 20)
	cl = checkpointLine{}
	json.Unmarshal([]byte(exp[cp]), &cl)
	cl.Head = fcp // keeps the real log's consistency proof: the forger cannot make one
	b, _ = json.Marshal(cl)
	bad = slices.Clone(exp)
	bad[cp] = string(b)
	ve = mustFail(t, unlines(bad), cp+1, "forked checkpoint")
	t.Logf("forked checkpoint: %v", ve)

	// Checkpoints out of order.
	bad = slices.Clone(exp)
	bad[cp], bad[cp-1] = bad[cp-1], bad[cp]
	mustFail(t, unlines(bad), cp+1, "checkpoints swapped")
}

func TestHeadSigner(t *testing.T) {
	fx := newFixture(t, 25)
	// A coordinator certificate from another CA.
	other, err := identity.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(identity.Identity{Name: "replica-1", Role: identity.RoleCoordinator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A hospital certificate from the right CA.
	ca, _ := pki(t)
	hosp, err := ca.Issue(identity.Identity{Name: "hospital-1", Role: identity.RoleHospital}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		cert    tls.Certificate
		withCA  string // error expected with the CA, "" = ok
		without string // error expected without it
	}{
		{"other CA", foreign, "not issued by the given CA", ""},
		{"hospital", hosp, "not a coordinator", "not a coordinator"},
	} {
		final := signHead(t, fx.log, c.cert, fx.log.Len())
		var b bytes.Buffer
		if err := Export(&b, fx.log, Filter{}, fx.log.Checkpoints(), final); err != nil {
			t.Fatal(err)
		}
		n := len(lines(b.String()))
		ve := mustFail(t, b.String(), n, c.name)
		if !strings.Contains(ve.Msg, c.withCA) {
			t.Fatalf("%s: %v", c.name, ve)
		}
		t.Logf("%s: %v", c.name, ve)
		_, err := Verify(strings.NewReader(b.String()), nil)
		switch {
		case c.without == "" && err != nil:
			t.Fatalf("%s without CA: %v", c.name, err)
		case c.without != "" && (err == nil || !strings.Contains(err.Error(), c.without)):
			t.Fatalf("%s without CA: %v", c.name, err)
		}
	}
	// A head for another size or root, an edited head, a head from another log.
	exp := lines(fx.export(t, Filter{}))
	last := len(exp) - 1
	for _, edit := range []func(string) string{
		func(s string) string { return strings.Replace(s, `"size":25`, `"size":24`, 1) },
		func(s string) string { return strings.Replace(s, `"time_unix_ms":1`, `"time_unix_ms":2`, 1) },
		func(s string) string { return strings.Replace(s, `"signer":"replica-1"`, `"signer":"replica-2"`, 1) },
	} {
		bad := slices.Clone(exp)
		bad[last] = edit(bad[last])
		if bad[last] == exp[last] {
			t.Fatal("edit did not apply")
		}
		mustFail(t, unlines(bad), last+1, "edited head")
	}
	// The head of a shorter log: every proof fails, the first record is named.
	_, cert := pki(t)
	var short Log
	for i := range 24 {
		short.Append(sampleRecord(i))
	}
	sh := signHead(t, &short, cert, 24)
	b, _ := json.Marshal(headLine{Type: lineHead, Head: sh})
	bad := slices.Clone(exp)
	bad[last] = string(b)
	first := slices.IndexFunc(exp, func(l string) bool { return lineType(t, l) == lineCheckpoint })
	ve := mustFail(t, unlines(bad), first+1, "head of another log")
	t.Logf("head of another log: %v", ve)
}

func TestExportRefusesForeignHeads(t *testing.T) {
	fx := newFixture(t, 20)
	other := newFixture(t, 21)
	var b bytes.Buffer
	if err := Export(&b, fx.log, Filter{}, nil, other.final); err == nil {
		t.Error("exported with another log's head")
	}
	if err := Export(&b, fx.log, Filter{SinceUnixMs: 10, UntilUnixMs: 5}, nil, fx.final); err == nil {
		t.Error("exported with an empty window")
	}
	fx2 := newFixture(t, 20)
	fx2.log.Append(Record{TimeUnixMs: 1, Actor: "x", Role: "operator", Action: ActionReplicaJoined})
	if err := Export(&b, fx.log, Filter{}, fx2.log.Checkpoints()[:1], fx.final); err != nil {
		t.Errorf("the same checkpoints: %v", err)
	}
}

func TestLargeLogIsCheap(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	_, cert := pki(t)
	l := &Log{}
	const n = 20000
	for i := range n {
		r := sampleRecord(i%1000 + 4)
		r.TimeUnixMs = testBase + int64(i)
		r.JobID = fmt.Sprintf("job-%d", i%50)
		if _, err := l.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	final := signHead(t, l, cert, n)
	var b bytes.Buffer
	if err := Export(&b, l, Filter{}, nil, final); err != nil {
		t.Fatal(err)
	}
	exported := time.Since(start)
	rep, err := verify(t, b.String())
	if err != nil || rep.Records != n {
		t.Fatal(err)
	}
	t.Logf("%d records: export %v, %d bytes, verify %v", n, exported, b.Len(), time.Since(start)-exported)
}

func TestConcurrentAppendAndExport(t *testing.T) {
	fx := newFixture(t, 30)
	_, cert := pki(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 30; i < 200; i++ {
			if _, err := fx.log.Append(sampleRecord(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 5 {
		final := signHead(t, fx.log, cert, fx.log.Len())
		var b bytes.Buffer
		if err := Export(&b, fx.log, Filter{JobID: "job-a"}, fx.log.Checkpoints(), final); err != nil {
			t.Fatal(err)
		}
		mustVerify(t, b.String())
	}
	wg.Wait()
}

// A contribution record's signed statement verifies offline for the
// hospital named, and fails for any edit of what it covers or a
// certificate of another hospital.
func TestCheckContribution(t *testing.T) {
	ca, err := identity.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string) tls.Certificate {
		c, err := ca.Issue(identity.Identity{Name: name, Role: identity.RoleHospital}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	h1, h2 := issue("h1"), issue("h2")
	region := bytes.Repeat([]byte{7}, 32)
	digest := bytes.Repeat([]byte{9}, 32)
	model := [32]byte{4}
	binding := jobspec.Binding("job-1", 3, 2, "sha256:m", model)
	sig, err := identity.SignStatement(h1.PrivateKey, identity.StatementContribution, identity.ContributionFields(region, binding[:], digest, "h1", 1234)...)
	if err != nil {
		t.Fatal(err)
	}
	record := func() *Record {
		return &Record{JobID: "job-1", Round: 3, Hospital: "h1", Digest: hex.EncodeToString(digest), Size: 1234, ModelHash: "sha256:m",
			TimeUnixMs: time.Now().UnixMilli(), Action: ActionContributionAccepted,
			Details: map[string]string{"signature": hex.EncodeToString(sig), "certificate": hex.EncodeToString(h1.Certificate[0]),
				"region_digest": hex.EncodeToString(region), "model_version": "2", "model_digest": hex.EncodeToString(model[:])}}
	}
	for _, roots := range []*x509.CertPool{ca.Pool(), nil} {
		if err := checkContribution(record(), roots); err != nil {
			t.Fatalf("a genuine statement (roots %v): %v", roots != nil, err)
		}
	}
	for name, edit := range map[string]func(r *Record){
		"size":          func(r *Record) { r.Size++ },
		"round":         func(r *Record) { r.Round = 4 },
		"model version": func(r *Record) { r.Details["model_version"] = "3" },
		"model digest":  func(r *Record) { r.Details["model_digest"] = strings.Repeat("05", 32) },
		"no model digest (another model's binding)": func(r *Record) { delete(r.Details, "model_digest") },
		"hospital":     func(r *Record) { r.Hospital = "h2" },
		"digest":       func(r *Record) { r.Digest = strings.Repeat("ab", 32) },
		"certificate":  func(r *Record) { r.Details["certificate"] = hex.EncodeToString(h2.Certificate[0]) },
		"no signature": func(r *Record) { r.Details["signature"] = "zz" },
	} {
		r := record()
		edit(r)
		if err := checkContribution(r, ca.Pool()); err == nil {
			t.Errorf("%s edited: the statement still verifies", name)
		}
	}
}

// shareAggregate is the aggregate digest signedShare's share is for.
var shareAggregate = bytes.Repeat([]byte{5}, 32)

// signedShare is the record of a decryption share of hospital h1 (a
// certificate it has ca issue), dated at, with h1's statement over it:
// round 3 of job-1 at model version 2, aggregate shareAggregate,
// contributors h1 to h3, decryptors h1 and h3, attempt 1.
func signedShare(t testing.TB, ca *identity.CA, at int64) Record {
	t.Helper()
	h1, err := ca.Issue(identity.Identity{Name: "h1", Role: identity.RoleHospital}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	region := bytes.Repeat([]byte{7}, 32)
	share := bytes.Repeat([]byte{9}, 32)
	model := [32]byte{4}
	binding := jobspec.Binding("job-1", 3, 2, "sha256:m", model)
	sig, err := identity.SignStatement(h1.PrivateKey, identity.StatementDecryptionShare,
		identity.DecryptionShareFields(region, binding[:], shareAggregate, share, "h1", 1, []string{"h1", "h2", "h3"}, []string{"h1", "h3"})...)
	if err != nil {
		t.Fatal(err)
	}
	return Record{JobID: "job-1", Round: 3, Hospital: "h1", Actor: "h1", Role: "hospital", Digest: hex.EncodeToString(share), Size: 4096,
		ModelHash: "sha256:m", TimeUnixMs: at, Action: ActionDecryptionShareGiven,
		Details: map[string]string{"signature": hex.EncodeToString(sig), "certificate": hex.EncodeToString(h1.Certificate[0]),
			"region_digest": hex.EncodeToString(region), "model_version": "2", "model_digest": hex.EncodeToString(model[:]),
			"aggregate_digest": hex.EncodeToString(shareAggregate), "attempt": "1", "contributors": "h3,h1,h2", "decryptors": "h1,h3"}}
}

// A decryption share record's statement verifies offline for the
// decryptor named, and fails for any edit of what it covers (the round, the
// aggregate, the share, the attempt, the contributor or decryptor set) or a
// certificate of another hospital.
func TestCheckDecryptionShare(t *testing.T) {
	ca, _ := pki(t)
	h2, err := ca.Issue(identity.Identity{Name: "h2", Role: identity.RoleHospital}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	genuine := signedShare(t, ca, time.Now().UnixMilli())
	record := func() *Record {
		r := genuine
		r.Details = maps.Clone(genuine.Details)
		return &r
	}
	for _, roots := range []*x509.CertPool{ca.Pool(), nil} {
		if err := checkDecryptionShare(record(), roots); err != nil {
			t.Fatalf("a genuine statement (roots %v): %v", roots != nil, err)
		}
	}
	for name, edit := range map[string]func(r *Record){
		"round":            func(r *Record) { r.Round = 4 },
		"model digest":     func(r *Record) { r.Details["model_digest"] = strings.Repeat("05", 32) },
		"aggregate digest": func(r *Record) { r.Details["aggregate_digest"] = strings.Repeat("06", 32) },
		"share digest":     func(r *Record) { r.Digest = strings.Repeat("ab", 32) },
		"attempt":          func(r *Record) { r.Details["attempt"] = "2" },
		"contributors":     func(r *Record) { r.Details["contributors"] = "h1,h2" },
		"decryptors":       func(r *Record) { r.Details["decryptors"] = "h1,h2" },
		"no decryptors":    func(r *Record) { delete(r.Details, "decryptors") },
		"one list into the other": func(r *Record) {
			r.Details["contributors"], r.Details["decryptors"] = "h1,h2,h3,h1", "h3"
		},
		"hospital":    func(r *Record) { r.Hospital = "h2" },
		"certificate": func(r *Record) { r.Details["certificate"] = hex.EncodeToString(h2.Certificate[0]) },
		"signature":   func(r *Record) { r.Details["signature"] = "zz" },
	} {
		r := record()
		edit(r)
		if err := checkDecryptionShare(r, ca.Pool()); err == nil {
			t.Errorf("%s edited: the statement still verifies", name)
		}
	}
}

// In an export, every signed share must be for what its round's
// round.closed record (and any later decryption.retried record) says the
// round decrypts: the aggregate, the contributors and the decryptors.
func TestSharesMatchTheirRound(t *testing.T) {
	ca, cert := pki(t)
	now := time.Now().UnixMilli() // the certificates are valid from now on
	shareRecord := signedShare(t, ca, now+2000)
	closed := func(digest []byte, contributors, decryptors string) Record {
		return Record{JobID: "job-1", Round: 3, Actor: "replica-1", Role: "coordinator", TimeUnixMs: now + 1000, Action: ActionRoundClosed,
			Digest: hex.EncodeToString(digest), Size: 4096, Details: map[string]string{"contributors": contributors, "decryptors": decryptors}}
	}
	retried := Record{JobID: "job-1", Round: 3, Actor: "replica-1", Role: "coordinator", TimeUnixMs: now + 1500, Action: ActionDecryptionRetried,
		Details: map[string]string{"decryptors": "h2,h3", "attempt": "2"}}
	export := func(records ...Record) string { return exportOf(t, cert, records...) }
	if rep := mustVerify(t, export(closed(shareAggregate, "h2,h1,h3", "h1,h3"), shareRecord)); rep.SignedShares != 1 {
		t.Errorf("%d signed shares, want 1", rep.SignedShares)
	}
	// Without its round's record (closed before an export's window) the
	// share's own statement still verifies.
	mustVerify(t, export(shareRecord))
	mustFail(t, export(closed(bytes.Repeat([]byte{6}, 32), "h1,h2,h3", "h1,h3"), shareRecord), 0, "aggregate")
	mustFail(t, export(closed(shareAggregate, "h1,h2", "h1,h3"), shareRecord), 0, "contributors")
	mustFail(t, export(closed(shareAggregate, "h1,h2,h3", "h1,h3"), retried, shareRecord), 0, "decryptors")
}

// exportOf is the whole-log export of a log of records, its head signed
// with cert.
func exportOf(t *testing.T, cert tls.Certificate, records ...Record) string {
	t.Helper()
	l := &Log{}
	for _, r := range records {
		if _, err := l.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if err := Export(&b, l, Filter{}, nil, signHead(t, l, cert, l.Len())); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// approvedUpdate is the update digest signedApproval's hospital approves.
var approvedUpdate = bytes.Repeat([]byte{8}, 32)

// signedApproval is the record of hospital h1's approval (a certificate it
// has ca issue), dated at, of round 3 of job-1 at model version 2:
// contributors h1 to h3, its update approvedUpdate, the aggregate
// shareAggregate and a fingerprint.
func signedApproval(t testing.TB, ca *identity.CA, at int64) Record {
	t.Helper()
	h1, err := ca.Issue(identity.Identity{Name: "h1", Role: identity.RoleHospital}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	region := bytes.Repeat([]byte{7}, 32)
	fingerprint := bytes.Repeat([]byte{3}, 128)
	model := [32]byte{4}
	binding := jobspec.Binding("job-1", 3, 2, "sha256:m", model)
	sig, err := identity.SignStatement(h1.PrivateKey, identity.StatementApproval,
		identity.ApprovalFields(region, binding[:], approvedUpdate, shareAggregate, fingerprint, "h1", []string{"h1", "h2", "h3"})...)
	if err != nil {
		t.Fatal(err)
	}
	return Record{JobID: "job-1", Round: 3, Hospital: "h1", Actor: "h1", Role: "hospital", ModelHash: "sha256:m", TimeUnixMs: at,
		Action: ActionContributorsApproved,
		Details: map[string]string{"signature": hex.EncodeToString(sig), "certificate": hex.EncodeToString(h1.Certificate[0]),
			"region_digest": hex.EncodeToString(region), "model_version": "2", "model_digest": hex.EncodeToString(model[:]),
			"aggregate_digest": hex.EncodeToString(shareAggregate), "update_digest": hex.EncodeToString(approvedUpdate),
			"fingerprint": hex.EncodeToString(fingerprint), "contributors": "h3,h1,h2"}}
}

// An approval record's statement verifies offline for the hospital named,
// and fails for any edit of what it covers or another hospital's
// certificate; in an export it must be for the aggregate and contributors
// its round closed with, and for the update the hospital was counted with.
func TestCheckApproval(t *testing.T) {
	ca, cert := pki(t)
	h2, err := ca.Issue(identity.Identity{Name: "h2", Role: identity.RoleHospital}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	genuine := signedApproval(t, ca, now+2000)
	record := func() *Record {
		r := genuine
		r.Details = maps.Clone(genuine.Details)
		return &r
	}
	if err := checkApproval(record(), ca.Pool()); err != nil {
		t.Fatalf("a genuine statement: %v", err)
	}
	for name, edit := range map[string]func(r *Record){
		"round":            func(r *Record) { r.Round = 4 },
		"aggregate digest": func(r *Record) { r.Details["aggregate_digest"] = strings.Repeat("06", 32) },
		"update digest":    func(r *Record) { r.Details["update_digest"] = strings.Repeat("06", 32) },
		"fingerprint":      func(r *Record) { r.Details["fingerprint"] = strings.Repeat("04", 128) },
		"contributors":     func(r *Record) { r.Details["contributors"] = "h1,h2" },
		"not a contributor": func(r *Record) {
			r.Details["contributors"] = "h2,h3"
		},
		"hospital":    func(r *Record) { r.Hospital = "h2" },
		"certificate": func(r *Record) { r.Details["certificate"] = hex.EncodeToString(h2.Certificate[0]) },
	} {
		r := record()
		edit(r)
		if err := checkApproval(r, ca.Pool()); err == nil {
			t.Errorf("%s edited: the statement still verifies", name)
		}
	}

	closed := func(digest []byte, contributors string) Record {
		return Record{JobID: "job-1", Round: 3, Actor: "replica-1", Role: "coordinator", TimeUnixMs: now + 1000, Action: ActionRoundClosed,
			Digest: hex.EncodeToString(digest), Size: 4096, Details: map[string]string{"contributors": contributors, "decryptors": "h1,h3"}}
	}
	counted := func(digest []byte) Record {
		return Record{JobID: "job-1", Round: 3, Hospital: "h1", Actor: "replica-1", Role: "coordinator", TimeUnixMs: now + 500,
			Action: ActionContributionAccepted, Digest: hex.EncodeToString(digest), Size: 4096}
	}
	export := func(records ...Record) string { return exportOf(t, cert, records...) }
	if rep := mustVerify(t, export(counted(approvedUpdate), closed(shareAggregate, "h1,h2,h3"), genuine)); rep.SignedApprovals != 1 {
		t.Errorf("%d signed approvals, want 1", rep.SignedApprovals)
	}
	mustVerify(t, export(genuine))
	mustFail(t, export(closed(bytes.Repeat([]byte{6}, 32), "h1,h2,h3"), genuine), 0, "aggregate")
	mustFail(t, export(closed(shareAggregate, "h1,h2"), genuine), 0, "contributors")
	mustFail(t, export(counted(bytes.Repeat([]byte{6}, 32)), closed(shareAggregate, "h1,h2,h3"), genuine), 0, "counted")
}

// A job submission's researcher statement verifies offline, and any edit
// of what it covers, or a signer other than a researcher, is caught.
func TestCheckJob(t *testing.T) {
	ca, err := identity.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, role identity.Role) tls.Certificate {
		c, err := ca.Issue(identity.Identity{Name: name, Role: role}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, bob, h1 := issue("alice", identity.RoleResearcher), issue("bob", identity.RoleResearcher), issue("h1", identity.RoleHospital)
	digest := bytes.Repeat([]byte{5}, 32)
	sign := func(c tls.Certificate) string {
		sig, err := identity.SignStatement(c.PrivateKey, identity.StatementJob, identity.JobFields(digest, "req-1")...)
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(sig)
	}
	record := func() *Record {
		return &Record{JobID: "job-1", Actor: "alice", Role: string(identity.RoleResearcher), Action: ActionJobSubmitted,
			TimeUnixMs: time.Now().UnixMilli(),
			Details: map[string]string{"signature": sign(alice), "certificate": hex.EncodeToString(alice.Certificate[0]),
				"spec_digest": hex.EncodeToString(digest), "request_id": "req-1"}}
	}
	for _, roots := range []*x509.CertPool{ca.Pool(), nil} {
		if err := checkJob(record(), roots); err != nil {
			t.Fatalf("a genuine statement (roots %v): %v", roots != nil, err)
		}
	}
	for name, edit := range map[string]func(r *Record){
		"spec digest": func(r *Record) { r.Details["spec_digest"] = strings.Repeat("ab", 32) },
		"request id":  func(r *Record) { r.Details["request_id"] = "req-2" },
		"actor":       func(r *Record) { r.Actor = "bob" },
		"certificate": func(r *Record) { r.Details["certificate"] = hex.EncodeToString(bob.Certificate[0]) },
		"a hospital's": func(r *Record) {
			r.Actor, r.Role, r.Details["certificate"], r.Details["signature"] = "h1", "hospital", hex.EncodeToString(h1.Certificate[0]), sign(h1)
		},
		"bad signature":   func(r *Record) { r.Details["signature"] = "zz" },
		"short digest":    func(r *Record) { r.Details["spec_digest"] = "abcd" },
		"missing details": func(r *Record) { delete(r.Details, "certificate") },
	} {
		r := record()
		edit(r)
		if err := checkJob(r, ca.Pool()); err == nil {
			t.Errorf("%s edited: the statement still verifies", name)
		}
	}
}

// A record names every hospital of the largest region in a list (the
// region's, a round's contributors and decryptors), with the longest
// names, and stays within an export line.
func TestRecordOfTheLargestRegion(t *testing.T) {
	names := make([]string, 1024)
	for i := range names {
		names[i] = fmt.Sprintf("%063d", i)
	}
	list := strings.Join(names, ",")
	l := &Log{}
	r := Record{TimeUnixMs: 1, Actor: "replica-1", Role: "coordinator", Action: ActionRoundClosed, JobID: "j1",
		Details: map[string]string{"contributors": list, "decryptors": list, "signature": strings.Repeat("ab", 80)}}
	if _, err := l.Append(r); err != nil {
		t.Fatal(err)
	}
	// An export line is the record and its proof: at most MaxProofHashes
	// hashes of 64 hex digits.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b) + MaxProofHashes*70 + 256; n > MaxLineBytes {
		t.Fatalf("an export line of up to %d bytes", n)
	}
}
