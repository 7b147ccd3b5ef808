package web

import (
	"strings"
	"testing"
	"time"

	"regionfl/identity"
)

// FuzzVerifyToken: no input panics, and whatever verifies names an allowed
// role and a valid name, and was minted with the secret.
func FuzzVerifyToken(f *testing.F) {
	secret := []byte(strings.Repeat("s", 32))
	now := time.Unix(1_800_000_000, 0)
	f.Add(MintLoginToken(secret, identity.Identity{Name: "alice", Role: identity.RoleAuditor}, time.Minute, now))
	f.Add(mint(secret, purposeSession, identity.Identity{Name: "bob", Role: identity.RoleResearcher}, now.Add(time.Hour)))
	f.Add("")
	f.Add(".")
	f.Add("cmVnaW9uZmwtdWkvdjF8bG9naW4.AAAA")
	f.Fuzz(func(t *testing.T, tok string) {
		for _, purpose := range []string{purposeLogin, purposeSession} {
			id, exp, err := verifyToken(secret, tok, purpose, now, MaxLoginTTL)
			if err != nil {
				continue
			}
			if !RoleAllowed(id.Role) || identity.ValidName(id.Name) != nil || !exp.After(now) {
				t.Fatalf("accepted %q as %v until %v", tok, id, exp)
			}
			if mint(secret, purpose, id, exp) != tok {
				t.Fatalf("accepted a token that was not minted: %q", tok)
			}
		}
	})
}
