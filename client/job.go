package client

import (
	"crypto/tls"
	"errors"

	"google.golang.org/protobuf/proto"

	"regionfl/identity"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// SubmitJobRequest is a researcher's signed request for a job: the spec
// with jobspec.Defaults applied (the coordinator adds none, so the nodes
// see what was signed) and the request_id, signed with the key of cert (a
// researcher certificate), as nodes will check it.
func SubmitJobRequest(cert tls.Certificate, spec *pb.JobSpec, requestID string) (*pb.SubmitJobRequest, error) {
	if requestID == "" {
		return nil, errors.New("a job needs a request id: it is signed with the spec")
	}
	s := proto.Clone(spec).(*pb.JobSpec)
	jobspec.Defaults(s)
	d := jobspec.SignedDigest(s)
	sig, err := identity.SignStatement(cert.PrivateKey, identity.StatementJob, identity.JobFields(d[:], requestID)...)
	if err != nil {
		return nil, err
	}
	return &pb.SubmitJobRequest{Spec: s, RequestId: requestID, Signature: sig}, nil
}
