package client

import (
	"crypto/tls"
	"time"

	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// CreateRegionRequest is an operator's signed request for a region: the
// hospitals (sorted), threshold, parameter set and a fresh ceremony seed,
// signed with the key of cert (an operator certificate), as nodes will
// check it. revocationMaxAge is 0 (no limit) or how old the newest
// signed revocation list may be (see PublishRevocationList).
func CreateRegionRequest(cert tls.Certificate, params string, hospitals []string, threshold, committee uint32, revocationMaxAge time.Duration) (*pb.CreateRegionRequest, error) {
	g, err := identity.NewGenesis(cert.PrivateKey, params, hospitals, threshold, committee, revocationMaxAge)
	if err != nil {
		return nil, err
	}
	return &pb.CreateRegionRequest{Hospitals: g.Hospitals, Threshold: g.Threshold, Committee: g.Committee, Seed: g.Seed, Params: g.Params, Signature: g.Signature, RevocationMaxAgeS: g.RevocationMaxAgeS}, nil
}
