package client

import (
	"crypto/tls"

	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// CreateRegionRequest is an operator's signed request for a region: the
// hospitals (sorted), threshold, parameter set and a fresh ceremony seed,
// signed with the key of cert (an operator certificate), as nodes will
// check it.
func CreateRegionRequest(cert tls.Certificate, params string, hospitals []string, threshold uint32) (*pb.CreateRegionRequest, error) {
	g, err := identity.NewGenesis(cert.PrivateKey, params, hospitals, threshold)
	if err != nil {
		return nil, err
	}
	return &pb.CreateRegionRequest{Hospitals: g.Hospitals, Threshold: g.Threshold, Seed: g.Seed, Params: g.Params, Signature: g.Signature}, nil
}
