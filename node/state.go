package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"regionfl/durable"
)

// stateFile holds what a hospital must never lose or leak: its HPKE private
// key, its secret key share and the record of decryption shares given. It is
// written with mode 0600, atomically (write, fsync, rename).
const stateFile = "node-state.json"

type diskState struct {
	// Epochs holds this node's keys per key epoch (see epochKeys).
	Epochs map[uint32]*epochKeys `json:"epochs,omitempty"`
	// legacyEpoch0 is where a state file written before key epochs kept
	// epoch 0's keys; loadState moves them into Epochs[0] and the next
	// save drops them.
	legacyEpoch0
	// RegionDigest pins the region (identity.RegionDigest) on first sight:
	// a coordinator that later serves other hospitals, another threshold,
	// parameter set or ceremony seed is refused.
	RegionDigest []byte `json:"region_digest,omitempty"`
	// Threshold is the pinned region's threshold t: the site's default
	// minimum K is t + 1 (policy.Policy.MinK).
	Threshold uint32 `json:"threshold,omitempty"`
	// Params names the pinned region's parameter set (he.ParamsByName);
	// empty for a region pinned before it was kept, which runs the
	// default set.
	Params string `json:"params,omitempty"`
	// SharesGiven holds, per update binding (hex), the one decryption share
	// made for it. It is written before the share leaves, so a retry or a
	// restart resends the same share and never makes a second one.
	SharesGiven map[string]givenShare `json:"shares_given"`
	// Encrypted holds, per update binding (hex), the one vector this node
	// encrypted under it (see Node.encrypt).
	Encrypted map[string]encryption `json:"encrypted,omitempty"`
	// Trained holds, per digest of what an update is made of (model,
	// scaled rows, training configuration), the binding (hex) it was made
	// for (see Node.recordTraining).
	Trained map[string]string `json:"trained,omitempty"`
	// MetricsReleased holds, per digest of a model and the test rows, the
	// binding (hex) whose update carried this site's metric sums of it
	// (see Node.releaseMetrics).
	MetricsReleased map[string]string `json:"metrics_released,omitempty"`
	// StatsGiven holds, per dataset digest (hex), the binding (hex) of the
	// one statistics update this site encrypted for it: a site's statistics
	// go into one decryption per dataset, ever (two, with different
	// contributor sets, would isolate it by their difference).
	StatsGiven map[string]string `json:"stats_given,omitempty"`
	// Approved holds, per update binding (hex), the one contributor set
	// this node signed for it.
	Approved map[string][]string `json:"approved,omitempty"`
	// Jobs holds, per job ID, the researcher-signed job this node vetted
	// (see Node.vet): every later task of the job must carry that spec.
	Jobs map[string]vettedJob `json:"jobs,omitempty"`
	// Revoked holds the certificate serials an operator's signed
	// revocation named (see Node.refreshRevocations), with the reason:
	// statements made with them are refused, whatever the coordinator
	// serves later.
	Revoked map[string]string `json:"revoked,omitempty"`
	// RevocationListMs is the issue time of the newest operator-signed
	// revocation list this node verified: an older one is refused.
	RevocationListMs int64 `json:"revocation_list_ms,omitempty"`
	// RevocationMaxAgeS is the pinned region's limit on that list's age
	// (0: none; see Node.revocationsFresh).
	RevocationMaxAgeS uint32 `json:"revocation_max_age_s,omitempty"`
	// Ledger is the site's privacy ledger: per job, the noise it ran with
	// and the rounds this site sent a noised update for. A round is counted
	// before its update leaves.
	Ledger map[string]privacyEntry `json:"privacy_ledger,omitempty"`
}

// epochKeys is what a node holds for one key epoch: the HPKE key its
// Shamir shares were sealed to, its secret state (he.Party: its own key
// and the Shamir shares it holds), and the ciphertexts it gave
// decryption shares for under the key: the smudging argument covers
// he.Params.MaxDecryptions of them, and the node refuses past that.
// Once the epoch is retired the keys are erased and Erased stays set, so
// the epoch's ceremony is never run again on this node.
type epochKeys struct {
	HPKEPrivate []byte `json:"hpke_private,omitempty"`
	HPKEPublic  []byte `json:"hpke_public,omitempty"`
	Party       []byte `json:"party,omitempty"`
	Decrypted   int    `json:"decrypted"`
	Erased      bool   `json:"erased,omitempty"`
	// Members are the hospitals of the epoch's ceremony as this node
	// verified and pinned them (nil: every hospital of the region, as in
	// files written before re-keys could leave hospitals out).
	Members []string `json:"members,omitempty"`
}

// legacyEpoch0 are the key fields of a state file written before key
// epochs (format migration only; see loadState).
type legacyEpoch0 struct {
	HPKEPrivate []byte `json:"hpke_private,omitempty"`
	HPKEPublic  []byte `json:"hpke_public,omitempty"`
	Party       []byte `json:"party,omitempty"`
	Decrypted   int    `json:"decrypted,omitempty"`
}

// encryption is what a node encrypted under one binding: the SHA-256 of
// the vector and count, and the digest of the update it sent.
type encryption struct {
	Vector []byte `json:"vector"`
	Update []byte `json:"update,omitempty"`
}

// givenShare is a decryption share and what it was made for: the node
// resends it only for the same aggregate, contributors and active set, and
// refuses any other request for the binding.
type givenShare struct {
	AggregateDigest []byte   `json:"aggregate_digest"`
	Contributors    []string `json:"contributors"`
	Active          []string `json:"active"`
	Share           []byte   `json:"share"`
}

type privacyEntry struct {
	NoiseMultiplier float64 `json:"noise_multiplier"`
	Delta           float64 `json:"delta"`
	Rounds          int     `json:"rounds"`
}

func loadState(dir string) (*diskState, error) {
	st := &diskState{}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, st); err != nil {
			return nil, fmt.Errorf("node: %s: %w", filepath.Join(dir, stateFile), err)
		}
	}
	st.makeMaps()
	// Migration: a file from before key epochs held one key, epoch 0's.
	if l := st.legacyEpoch0; l.HPKEPrivate != nil || l.Party != nil {
		if _, ok := st.Epochs[0]; !ok {
			st.Epochs[0] = &epochKeys{HPKEPrivate: l.HPKEPrivate, HPKEPublic: l.HPKEPublic, Party: l.Party, Decrypted: l.Decrypted}
		}
		st.legacyEpoch0 = legacyEpoch0{}
	}
	return st, nil
}

// makeMaps gives every record an empty map (a state file written before
// a record existed has none).
func (st *diskState) makeMaps() {
	if st.Epochs == nil {
		st.Epochs = map[uint32]*epochKeys{}
	}
	if st.SharesGiven == nil {
		st.SharesGiven = map[string]givenShare{}
	}
	if st.Encrypted == nil {
		st.Encrypted = map[string]encryption{}
	}
	if st.Approved == nil {
		st.Approved = map[string][]string{}
	}
	if st.StatsGiven == nil {
		st.StatsGiven = map[string]string{}
	}
	if st.Trained == nil {
		st.Trained = map[string]string{}
	}
	if st.MetricsReleased == nil {
		st.MetricsReleased = map[string]string{}
	}
	if st.Ledger == nil {
		st.Ledger = map[string]privacyEntry{}
	}
	if st.Jobs == nil {
		st.Jobs = map[string]vettedJob{}
	}
	if st.Revoked == nil {
		st.Revoked = map[string]string{}
	}
}

func (st *diskState) save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return durable.WriteFile(filepath.Join(dir, stateFile), b)
}
