package identity

import (
	"errors"
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
		{"another kind", ca, der, h1, now, sig, StatementPublicKeyShare, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"another name", ca, der, Identity{Name: "h2", Role: RoleHospital}, now, sig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"another role", ca, der, Identity{Name: "h1", Role: RoleCoordinator}, now, sig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"certificate of another CA", ca, foreign.Certificate[0], h1, now, fsig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"expired certificate", ca, der, h1, now.Add(2 * time.Hour), sig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"no signature", ca, der, h1, now, nil, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"garbage certificate", ca, []byte("not a certificate"), h1, now, sig, StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
		{"oversized signature", ca, der, h1, now, make([]byte, 1000), StatementHPKEKey, [][]byte{[]byte("region"), []byte("h1"), []byte("key")}},
	}
	for _, tc := range bad {
		err := VerifyStatement(tc.ca.Pool(), tc.der, tc.want, tc.at, tc.sig, tc.kind, tc.fields...)
		if !errors.Is(err, ErrBadStatement) {
			t.Errorf("%s: got %v, want ErrBadStatement", tc.name, err)
		}
	}
}

func TestRegionDigestInjective(t *testing.T) {
	seed := []byte("seed")
	base := RegionDigest("p", []string{"a", "b"}, 2, seed, 0)
	for name, d := range map[string][32]byte{
		"names joined":  RegionDigest("p", []string{"ab"}, 2, seed, 0),
		"names split":   RegionDigest("p", []string{"a", "", "b"}, 2, seed, 0),
		"threshold":     RegionDigest("p", []string{"a", "b"}, 1, seed, 0),
		"seed":          RegionDigest("p", []string{"a", "b"}, 2, []byte("seee"), 0),
		"params":        RegionDigest("q", []string{"a", "b"}, 2, seed, 0),
		"params shifts": RegionDigest("pa", []string{"b"}, 2, seed, 0),
		"max age":       RegionDigest("p", []string{"a", "b"}, 2, seed, 60),
		// The age is a trailing field: a seed cannot absorb it.
		"age in seed": RegionDigest("p", []string{"a", "b"}, 2, append(seed, 0, 0, 0, 0, 0, 0, 0, 60), 0),
	} {
		if d == base {
			t.Errorf("%s: same digest as the base region", name)
		}
	}
}

// A ceremony with every hospital keeps its digest; any other member list
// gives its own, and lists that concatenate alike do not collide.
func TestMembersDigest(t *testing.T) {
	c := CeremonyDigest(RegionDigest("p", []string{"a", "b", "c"}, 2, []byte("seed"), 0), 1)
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
	if MembersDigest(CeremonyDigest(RegionDigest("p", all, 2, []byte("seed"), 0), 2), all, []string{"a", "b"}) == MembersDigest(c, all, []string{"a", "b"}) {
		t.Fatal("the same members in two epochs share a digest")
	}
}
