package identity

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestStatements(t *testing.T) {
	ca, err := NewCA("region", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("elsewhere", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h1 := Identity{Name: "h1", Role: RoleHospital}
	cert, err := ca.Issue(h1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(h1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := SignStatement(cert.PrivateKey, StatementHPKEKey, []byte("region"), []byte("h1"), []byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	fsig, err := SignStatement(foreign.PrivateKey, StatementHPKEKey, []byte("region"), []byte("h1"), []byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der := cert.Certificate[0]
	if err := VerifyStatement(ca.Pool(), der, h1, now, sig, StatementHPKEKey, []byte("region"), []byte("h1"), []byte("key")); err != nil {
		t.Fatalf("a good statement: %v", err)
	}
	if err := CheckSignature(der, sig, StatementHPKEKey, []byte("region"), []byte("h1"), []byte("key")); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	bad := []struct {
		name   string
		ca     *CA
		der    []byte
		want   Identity
		at     time.Time
		sig    []byte
		kind   string
		fields [][]byte
	}{
		{"another field", ca, der, h1, now, sig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("kez")}},
		{"fields shifted", ca, der, h1, now, sig, StatementHPKEKey, [][]byte{[]byte("regionh"), []byte("1"), []byte("key")}},
		{"another kind", ca, der, h1, now, sig, StatementSealedShare, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"another name", ca, der, Identity{Name: "h2", Role: RoleHospital}, now, sig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"another role", ca, der, Identity{Name: "h1", Role: RoleCoordinator}, now, sig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"certificate of another CA", ca, foreign.Certificate[0], h1, now, fsig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"expired certificate", ca, der, h1, now.Add(2 * time.Hour), sig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"no signature", ca, der, h1, now, nil, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"garbage certificate", ca, []byte("not a certificate"), h1, now, sig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"oversized signature", ca, der, h1, now, make([]byte, 1000), StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
	}
	// A Verifier refuses the same, fresh or once it verified the good
	// statement and remembers its certificate and the statement.
	warm := NewVerifier(ca.Pool())
	for range 2 {
		if serial, err := warm.Verify(der, h1, now, sig, StatementHPKEKey, []byte("region"), []byte("h1"), []byte("key")); err != nil || serial != SerialHex(cert.Leaf) {
			t.Fatalf("a good statement through a verifier: %v", err)
		}
	}
	for _, tc := range bad {
		err := VerifyStatement(tc.ca.Pool(), tc.der, tc.want, tc.at, tc.sig, tc.kind, tc.fields...)
		if !errors.Is(err, ErrBadStatement) {
			t.Errorf("%s: got %v, want ErrBadStatement", tc.name, err)
		}
		if _, err := NewVerifier(tc.ca.Pool()).Verify(tc.der, tc.want, tc.at, tc.sig, tc.kind, tc.fields...); !errors.Is(err, ErrBadStatement) {
			t.Errorf("%s, fresh verifier: got %v, want ErrBadStatement", tc.name, err)
		}
		if _, err := warm.Verify(tc.der, tc.want, tc.at, tc.sig, tc.kind, tc.fields...); !errors.Is(err, ErrBadStatement) {
			t.Errorf("%s, warm verifier: got %v, want ErrBadStatement", tc.name, err)
		}
	}
}

func TestRegionDigestInjective(t *testing.T) {
	seed := []byte("seed")
	seen := map[[32]byte]string{RegionDigest("p", []string{"a", "b"}, 2, 0, seed, 0): "the base region"}
	for name, d := range map[string][32]byte{
		"names joined":  RegionDigest("p", []string{"ab"}, 2, 0, seed, 0),
		"names split":   RegionDigest("p", []string{"a", "", "b"}, 2, 0, seed, 0),
		"threshold":     RegionDigest("p", []string{"a", "b"}, 1, 0, seed, 0),
		"seed":          RegionDigest("p", []string{"a", "b"}, 2, 0, []byte("seee"), 0),
		"params":        RegionDigest("q", []string{"a", "b"}, 2, 0, seed, 0),
		"params shifts": RegionDigest("pa", []string{"b"}, 2, 0, seed, 0),
		"max age":       RegionDigest("p", []string{"a", "b"}, 2, 0, seed, 60),
		// The age is a trailing field: a seed cannot absorb it.
		"age in seed": RegionDigest("p", []string{"a", "b"}, 2, 0, append(seed, 0, 0, 0, 0, 0, 0, 0, 60), 0),
		"committee":   RegionDigest("p", []string{"a", "b"}, 2, 2, seed, 0),
		// Committee and age are trailing fields: neither takes the
		// other's place.
		"committee not age": RegionDigest("p", []string{"a", "b"}, 2, 60, seed, 0),
	} {
		if prev, ok := seen[d]; ok {
			t.Errorf("%s: same digest as %s", name, prev)
		}
		seen[d] = name
	}
}

// EpochPoints puts the committee first: the same c members for the same
// ceremony whoever computes it, another draw for another epoch, and the
// sorted members when every member holds shares.
func TestEpochPoints(t *testing.T) {
	var members []string
	for i := range 40 {
		members = append(members, fmt.Sprintf("hospital-%02d", i))
	}
	region := RegionDigest("p", members, 3, 5, []byte("seed"), 0)
	for _, c := range []uint32{0, 40, 41} {
		if got := EpochPoints(CeremonyDigest(region, 0), members, c); !slices.Equal(got, members) || CommitteeSize(c, len(members)) != len(members) {
			t.Errorf("committee %d: points %v, want the sorted members", c, got)
		}
	}
	draws := map[string]bool{}
	for e := range uint32(8) {
		points := EpochPoints(CeremonyDigest(region, e), members, 5)
		committee, rest := points[:5], points[5:]
		if CommitteeSize(5, len(members)) != 5 || !slices.IsSorted(committee) || !slices.IsSorted(rest) {
			t.Fatalf("epoch %d: committee %v and the rest are not each sorted", e, committee)
		}
		if got := slices.Sorted(slices.Values(points)); !slices.Equal(got, members) {
			t.Fatalf("epoch %d: points %v are not a permutation of the members", e, points)
		}
		// Leaving a member outside the committee out of the epoch does not
		// change the committee: a coordinator can take names out of the
		// draw, never put one in.
		fewer := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == rest[0] })
		if got := EpochPoints(CeremonyDigest(region, e), fewer, 5)[:5]; !slices.Equal(got, committee) {
			t.Errorf("epoch %d: without %s the committee is %v, was %v", e, rest[0], got, committee)
		}
		draws[fmt.Sprint(committee)] = true
	}
	if len(draws) < 6 {
		t.Errorf("8 epochs drew %d distinct committees of 5 from 40", len(draws))
	}
}

// A ceremony with every hospital keeps its digest; any other member list
// gives its own, and lists that concatenate alike do not collide.
func TestMembersDigest(t *testing.T) {
	c := CeremonyDigest(RegionDigest("p", []string{"a", "b", "c"}, 2, 0, []byte("seed"), 0), 1)
	all := []string{"a", "b", "c"}
	if MembersDigest(c, all, all) != c {
		t.Fatal("every hospital a member: the digest changed")
	}
	seen := map[[32]byte]string{c: "all"}
	for name, m := range map[string][]string{
		"a,b": {"a", "b"}, "a,c": {"a", "c"}, "ab": {"ab"}, "a,bc": {"a", "bc"}, "ab,c": {"ab", "c"}, "none": {},
	} {
		d := MembersDigest(c, all, m)
		if prev, ok := seen[d]; ok {
			t.Fatalf("members %s and %s share a digest", name, prev)
		}
		seen[d] = name
	}
	if MembersDigest(CeremonyDigest(RegionDigest("p", all, 2, 0, []byte("seed"), 0), 2), all, []string{"a", "b"}) == MembersDigest(c, all, []string{"a", "b"}) {
		t.Fatal("the same members in two epochs share a digest")
	}
}
