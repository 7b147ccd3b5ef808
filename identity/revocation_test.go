package identity

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"
)

// revocationFixture is a region CA with an operator and a hospital.
func revocationFixture(t *testing.T) (ca *CA, op, hospital tls.Certificate) {
	t.Helper()
	ca, err := NewCA("region", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if op, err = ca.Issue(Identity{Name: "ops", Role: RoleOperator}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if hospital, err = ca.Issue(Identity{Name: "h1", Role: RoleHospital}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return ca, op, hospital
}

func TestRevocations(t *testing.T) {
	ca, op, hospital := revocationFixture(t)
	now := time.Now()
	serial := SerialHex(hospital.Leaf)
	sig, ms, err := SignRevocation(op.PrivateKey, serial, "key lost", now)
	if err != nil {
		t.Fatal(err)
	}
	der := op.Certificate[0]
	if by, err := VerifyRevocation(ca.Pool(), der, sig, serial, "key lost", ms, now); err != nil || by.Name != "ops" {
		t.Fatalf("a good revocation: %v by %v", err, by)
	}
	// Checked at the time it was signed: it outlives the operator's
	// certificate.
	if _, err := VerifyRevocation(ca.Pool(), der, sig, serial, "key lost", ms, now.Add(48*time.Hour)); err != nil {
		t.Fatalf("a revocation made by a certificate that expired since: %v", err)
	}
	hsig, hms, err := SignRevocation(hospital.PrivateKey, serial, "key lost", now)
	if err != nil {
		t.Fatal(err)
	}
	future, fms, err := SignRevocation(op.PrivateKey, serial, "key lost", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, serial, reason string
		der, sig             []byte
		ms                   int64
	}{
		{"another serial", "abc", "key lost", der, sig, ms},
		{"another reason", serial, "left", der, sig, ms},
		{"another time", serial, "key lost", der, sig, ms + 1},
		{"signed by a hospital", serial, "key lost", hospital.Certificate[0], hsig, hms},
		{"signed in the future", serial, "key lost", der, future, fms},
		{"serial not normalized", "00" + serial, "key lost", der, sig, ms},
		{"no signature", serial, "key lost", der, nil, ms},
	} {
		if _, err := VerifyRevocation(ca.Pool(), tc.der, tc.sig, tc.serial, tc.reason, tc.ms, now); !errors.Is(err, ErrBadStatement) {
			t.Errorf("%s: got %v, want ErrBadStatement", tc.name, err)
		}
	}
	for in, want := range map[string]string{"0A:bC": "abc", "00ff": "ff", "xyz": "", "": "", "0": ""} {
		if got := NormalizeSerial(in); got != want {
			t.Errorf("NormalizeSerial(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRevocationList(t *testing.T) {
	ca, op, hospital := revocationFixture(t)
	region := [32]byte{1}
	now := time.Now()
	serials := []string{"1f", "a0"}
	sig, ms, err := SignRevocationList(op.PrivateKey, region, serials, now)
	if err != nil {
		t.Fatal(err)
	}
	der := op.Certificate[0]
	if by, err := VerifyRevocationList(ca.Pool(), der, sig, region, ms, serials, now); err != nil || by.Name != "ops" {
		t.Fatalf("a good list: %v by %v", err, by)
	}
	hsig, hms, err := SignRevocationList(hospital.PrivateKey, region, serials, now)
	if err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"another region": func() error {
			_, err := VerifyRevocationList(ca.Pool(), der, sig, [32]byte{2}, ms, serials, now)
			return err
		}(),
		"a serial left out": func() error {
			_, err := VerifyRevocationList(ca.Pool(), der, sig, region, ms, serials[:1], now)
			return err
		}(),
		"another time": func() error {
			_, err := VerifyRevocationList(ca.Pool(), der, sig, region, ms-1, serials, now)
			return err
		}(),
		"in the future": func() error {
			_, err := VerifyRevocationList(ca.Pool(), der, sig, region, ms, serials, now.Add(-MaxClockSkew-time.Minute))
			return err
		}(),
		"unsorted": func() error {
			_, err := VerifyRevocationList(ca.Pool(), der, sig, region, ms, []string{"a0", "1f"}, now)
			return err
		}(),
		"repeated": func() error {
			_, err := VerifyRevocationList(ca.Pool(), der, sig, region, ms, []string{"1f", "1f"}, now)
			return err
		}(),
		"not normalized": func() error {
			_, err := VerifyRevocationList(ca.Pool(), der, sig, region, ms, []string{"01f"}, now)
			return err
		}(),
		"signed by a hospital": func() error {
			_, err := VerifyRevocationList(ca.Pool(), hospital.Certificate[0], hsig, region, hms, serials, now)
			return err
		}(),
	} {
		if !errors.Is(err, ErrBadStatement) {
			t.Errorf("%s: got %v, want ErrBadStatement", name, err)
		}
	}
	if _, _, err := SignRevocationList(op.PrivateKey, region, []string{"b", "a"}, now); err == nil {
		t.Error("signed an unsorted list")
	}
	for _, d := range []time.Duration{0, MinRevocationMaxAge, 24 * time.Hour, MaxRevocationMaxAge} {
		if err := CheckRevocationMaxAge(d); err != nil {
			t.Errorf("max age %v: %v", d, err)
		}
	}
	for _, d := range []time.Duration{time.Second, MinRevocationMaxAge - time.Second, MaxRevocationMaxAge + time.Second, time.Minute + time.Millisecond, -time.Hour} {
		if err := CheckRevocationMaxAge(d); err == nil {
			t.Errorf("max age %v accepted", d)
		}
	}
}
