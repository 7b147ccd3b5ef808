package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "regionfl/proto/regionfl/v1"
)

// keptDir holds, per job, the encrypted update the node made for the job's
// collecting round. The node keeps it until no poll names the round any more
// (it closed or aborted): a retried task, a restarted node and a new leader
// asking for a resend all get these same bytes, so a hospital makes one
// update per round and the coordinator counts it once. The update is
// encrypted under the region's key; the file holds nothing in the clear.
const keptDir = "kept"

// keptUpdate describes a kept update: what its header says.
type keptUpdate struct {
	JobID        string `json:"job_id"`
	Round        uint32 `json:"round"`
	ModelVersion uint32 `json:"model_version"`
	ModelHash    string `json:"model_hash"`
	// ModelDigest is jobspec.ModelDigest of the model trained from (none
	// for the statistics round): part of the update's binding.
	ModelDigest []byte `json:"model_digest,omitempty"`
	Digest      []byte `json:"digest"`
	Size        uint64 `json:"size"`
	// SiteMetrics go with the update when the job shares site figures.
	SiteMetrics *pb.ClinicalMetrics `json:"site_metrics,omitempty"`
}

// keptPath names a job's file by a hash of the job ID, which comes from the
// coordinator and is not trusted as a file name.
func keptPath(dir, jobID string) string {
	h := sha256.Sum256([]byte(jobID))
	return filepath.Join(dir, keptDir, hex.EncodeToString(h[:16])+".upd")
}

// saveKept writes a job's kept update, replacing the one of its previous
// round: one JSON line of metadata, then the encrypted bytes.
func saveKept(dir string, k *keptUpdate, raw []byte) error {
	return writeMetaFile(keptPath(dir, k.JobID), k, raw)
}

// loadKept reads the metadata of every kept update, by job ID.
func loadKept(dir string) (map[string]*keptUpdate, error) {
	entries, err := os.ReadDir(filepath.Join(dir, keptDir))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*keptUpdate{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]*keptUpdate{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".upd") {
			continue // a temporary file of an interrupted write
		}
		k, _, err := readKept(filepath.Join(dir, keptDir, e.Name()), false)
		if err != nil {
			return nil, err
		}
		out[k.JobID] = k
	}
	return out, nil
}

// readKept reads a kept-update file, with its bytes when withRaw is set.
func readKept(path string, withRaw bool) (*keptUpdate, []byte, error) {
	k := &keptUpdate{}
	var size func() (int, error)
	if withRaw {
		size = func() (int, error) { return int(k.Size), nil }
	}
	raw, err := readMetaFile(path, k, size)
	if err != nil {
		return nil, nil, fmt.Errorf("node: kept update %s: %w", path, err)
	}
	return k, raw, nil
}

func removeKept(dir, jobID string) error { return removeFile(keptPath(dir, jobID)) }

// keptSealedDir holds, per key epoch, the sealed Shamir shares the node
// sent to the epoch's committee. The coordinator's leader relays them
// outside its log, so a new leader asks for them again, and it must get
// these very bytes: the log records their digests. Each share is sealed
// to its committee member (HPKE); the file holds nothing in the clear.
const keptSealedDir = "sealed"

// keptSealed describes kept sealed shares.
type keptSealed struct {
	Epoch uint32 `json:"epoch"`
	// MembersDigest is identity.MembersDigest of the epoch the shares
	// were sealed in: they serve that membership only.
	MembersDigest []byte `json:"members_digest"`
	Size          uint64 `json:"size"`
}

// maxKeptSealed bounds a kept-sealed file: a committee of at most 64
// members, one share of under 1 MiB each.
const maxKeptSealed = 64 << 20

func keptSealedPath(dir string, epoch uint32) string {
	return filepath.Join(dir, keptSealedDir, fmt.Sprintf("epoch-%d.pb", epoch))
}

// saveKeptSealed keeps the request that sent key epoch epoch's sealed
// shares.
func saveKeptSealed(dir string, epoch uint32, membersDigest []byte, req *pb.SubmitSealedSharesRequest) error {
	raw, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	return writeMetaFile(keptSealedPath(dir, epoch), &keptSealed{Epoch: epoch, MembersDigest: membersDigest, Size: uint64(len(raw))}, raw)
}

// loadKeptSealed returns the request kept for key epoch epoch and the
// membership membersDigest, or nil if there is none.
func loadKeptSealed(dir string, epoch uint32, membersDigest []byte) (*pb.SubmitSealedSharesRequest, error) {
	k := &keptSealed{}
	raw, err := readMetaFile(keptSealedPath(dir, epoch), k, func() (int, error) {
		if k.Size > maxKeptSealed {
			return 0, fmt.Errorf("%d bytes of sealed shares, at most %d", k.Size, maxKeptSealed)
		}
		return int(k.Size), nil
	})
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("node: kept sealed shares of epoch %d: %w", epoch, err)
	case k.Epoch != epoch || !bytes.Equal(k.MembersDigest, membersDigest):
		return nil, nil // of a membership the epoch does not have
	}
	req := &pb.SubmitSealedSharesRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		return nil, fmt.Errorf("node: kept sealed shares of epoch %d: %w", epoch, err)
	}
	return req, nil
}

func removeKeptSealed(dir string, epoch uint32) error { return removeFile(keptSealedPath(dir, epoch)) }
