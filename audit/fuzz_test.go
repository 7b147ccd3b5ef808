package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzVerify feeds arbitrary bytes to the export verifier. Beyond not
// panicking, a file that verifies must be sound: every record it holds is
// the real record of the signed log at that seq (the fuzzer holds no
// signing key, so it can only reuse the seeds' signed heads).
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, 13) // small: each run checks every signature
	for _, flt := range []Filter{{}, {JobID: "job-b"}, {JobID: "nope"},
		{SinceUnixMs: testBase + 2000, UntilUnixMs: testBase + 4000}, {JobID: "job-a", SinceUnixMs: testBase + 3000}} {
		f.Add([]byte(fx.export(f, flt)))
	}
	f.Add([]byte(`{"type":"header","version":1,"filter":{}}` + "\n"))
	f.Add([]byte("\n\n"))
	ca, _ := pki(f)
	pool := ca.Pool()
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := Verify(bytes.NewReader(data), pool)
		if err != nil {
			if _, ok := err.(*VerifyError); !ok {
				t.Fatalf("error %T is not a *VerifyError: %v", err, err)
			}
			return
		}
		if rep.TreeSize > fx.log.Len() {
			t.Fatalf("verified a tree of %d records; the log has %d", rep.TreeSize, fx.log.Len())
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, MaxLineBytes)
		for sc.Scan() {
			var rl recordLine
			if json.Unmarshal(sc.Bytes(), &rl) != nil || (rl.Type != lineRecord && rl.Type != lineBoundary) {
				continue
			}
			var r Record
			if err := json.Unmarshal(rl.Record, &r); err != nil {
				t.Fatalf("verified an undecodable record: %v", err)
			}
			want, err := fx.log.Record(r.Seq)
			if err != nil || !reflect.DeepEqual(r.clone(), want) {
				t.Fatalf("verified a forged record %+v, the log has %+v", r, want)
			}
		}
	})
}

// FuzzUnmarshal feeds arbitrary bytes to the snapshot restore: no panic,
// and whatever restores re-snapshots to the same log.
func FuzzUnmarshal(f *testing.F) {
	fx := newFixture(f, 23)
	b, err := json.Marshal(fx.log)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	e, _ := json.Marshal(&Log{})
	f.Add(e)
	f.Add([]byte(`{"version":1,"size":0,"root_hash":"","records":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var l Log
		if err := json.Unmarshal(data, &l); err != nil {
			if l.Len() != 0 {
				t.Fatal("a failed restore changed the log")
			}
			return
		}
		again, err := json.Marshal(&l)
		if err != nil {
			t.Fatal(err)
		}
		var l2 Log
		if err := json.Unmarshal(again, &l2); err != nil {
			t.Fatalf("re-snapshot does not restore: %v", err)
		}
		if l2.Root() != l.Root() || l2.Len() != l.Len() {
			t.Fatal("re-snapshot differs")
		}
		for i := range l.Len() {
			r, _ := l.Record(i)
			if r.Validate() != nil || !r.Action.Known() {
				t.Fatalf("restored an invalid record %d", i)
			}
		}
	})
}
