package server

import (
	"crypto"
	"crypto/tls"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"regionfl/audit"
	"regionfl/client"
	"regionfl/coordinator/fsm"
	pb "regionfl/proto/regionfl/v1"
)

type auditorService struct {
	pb.UnimplementedAuditorServiceServer
	*Server
}

// SetSigner gives the server the replica's certificate and key, which sign
// the tree head that closes every audit export.
func (s *Server) SetSigner(cert tls.Certificate) error {
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok || len(cert.Certificate) == 0 {
		return errors.New("server: the replica's key cannot sign audit heads")
	}
	s.signer, s.certDER = signer, cert.Certificate[0]
	return nil
}

// ExportAudit streams the audit log as JSON Lines: the records matching
// the filter with their inclusion proofs, the signed checkpoints with
// consistency proofs, and a head signed now by this replica. It is served
// by the leader so the export includes everything committed.
func (s auditorService) ExportAudit(req *pb.ExportAuditRequest, stream pb.AuditorService_ExportAuditServer) error {
	ctx := stream.Context()
	if err := s.leaderRead(ctx); err != nil {
		return err
	}
	if s.signer == nil {
		return status.Error(codes.FailedPrecondition, "this replica has no key to sign audit exports")
	}
	f := audit.Filter{JobID: req.JobId, SinceUnixMs: req.SinceUnixMs, UntilUnixMs: req.UntilUnixMs}
	if err := f.Validate(); err != nil {
		return status.Errorf(codes.InvalidArgument, "filter: %v", err)
	}
	var l *audit.Log
	s.read(func(st *fsm.State) { l = st.Audit })
	size := l.Len()
	if size == 0 {
		return status.Error(codes.FailedPrecondition, "the audit log is empty")
	}
	head, err := l.SignHead(s.signer, s.certDER, size, time.Now().UnixMilli())
	if err != nil {
		return status.Errorf(codes.Internal, "sign head: %v", err)
	}
	w := &chunkWriter{send: func(b []byte) error { return stream.Send(&pb.ExportAuditResponse{Chunk: b}) }}
	// Export leaves out the checkpoints above the signed head's size.
	if err := audit.Export(w, l, f, l.Checkpoints(), head); err != nil {
		return status.Errorf(codes.Internal, "export: %v", err)
	}
	return w.flush()
}

// chunkWriter turns a byte stream into messages of at most client.ChunkSize.
type chunkWriter struct {
	buf  []byte
	send func([]byte) error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), client.ChunkSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == client.ChunkSize {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.send(w.buf)
	w.buf = nil
	return err
}
