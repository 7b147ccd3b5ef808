// Package policy is a hospital's own rules for the training it takes part
// in: a YAML file the hospital owns and edits, reloaded when it changes.
// A job outside the policy is refused by that node with the reason, which
// the researcher sees in `regionfl job status`.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"regionfl/jobspec"
	"regionfl/privacy"
	pb "regionfl/proto/regionfl/v1"
)

// MaxFileSize bounds the policy file read into memory.
const MaxFileSize = 1 << 20

// Policy is a site's rules. Empty lists and zero values mean "no rule".
type Policy struct {
	// ModelHashes the site trains (models.Spec.Hash), e.g. sha256:….
	ModelHashes []string `yaml:"model_hashes"`
	// Purposes the site accepts; a job's purpose must equal one of them.
	Purposes []string `yaml:"purposes"`
	// MinParticipants is the smallest K (the job's min_hospitals) the site
	// accepts. 0 means the default, t + 1 for the region's threshold t:
	// K counts hospitals that may collude with the coordinator, so an
	// update hides among K − (t − 1) honest contributors, and at K = t
	// the t − 1 others of a decryption could isolate it. A site that sets
	// a lower value accepts that.
	MinParticipants uint32 `yaml:"min_participants"`
	// MaxRounds is the most rounds one job may ask of the site.
	MaxRounds uint32 `yaml:"max_rounds"`
	// MinNoiseMultiplier is the DP noise floor: jobs with less noise are
	// refused. 0 accepts jobs without DP.
	MinNoiseMultiplier float64 `yaml:"min_noise_multiplier"`
	// EpsilonBudget is the total ε the site spends over all jobs (at each
	// job's δ); 0 means no budget. Jobs without DP cannot be accounted and
	// are refused when a budget is set.
	EpsilonBudget float64 `yaml:"epsilon_budget"`
	// ShareSiteMetrics lets the node send its own clinical figures in the
	// clear when a job asks for them (share_site_metrics). Off by default:
	// the researcher's wish alone never makes a site's own figures leave
	// it; only the region's encrypted sum is decrypted.
	ShareSiteMetrics bool `yaml:"share_site_metrics"`
}

// Parse decodes and validates a policy; unknown keys are an error so a typo
// never silently drops a rule.
func Parse(b []byte) (Policy, error) {
	var p Policy
	if len(bytes.TrimSpace(b)) == 0 {
		return p, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("policy: %w", err)
	}
	switch {
	case math.IsNaN(p.MinNoiseMultiplier) || p.MinNoiseMultiplier < 0 || math.IsInf(p.MinNoiseMultiplier, 0):
		return Policy{}, fmt.Errorf("policy: min_noise_multiplier %v must be finite and ≥ 0", p.MinNoiseMultiplier)
	case math.IsNaN(p.EpsilonBudget) || p.EpsilonBudget < 0 || math.IsInf(p.EpsilonBudget, 0):
		return Policy{}, fmt.Errorf("policy: epsilon_budget %v must be finite and ≥ 0", p.EpsilonBudget)
	}
	for _, h := range p.ModelHashes {
		if !strings.HasPrefix(h, "sha256:") {
			return Policy{}, fmt.Errorf("policy: model hash %q does not start with \"sha256:\"", h)
		}
	}
	return p, nil
}

// MinK is the smallest K the site accepts in a region of threshold t.
func (p Policy) MinK(t uint32) uint32 {
	if p.MinParticipants > 0 {
		return p.MinParticipants
	}
	return t + 1
}

// Check says why the site refuses a job, or "" if it accepts it, in a
// region of threshold t. spent is the ε the site has already spent on
// other jobs.
func (p Policy) Check(spec *pb.JobSpec, spent float64, t uint32) string {
	hash := jobspec.FromProto(spec.GetModel()).Hash()
	switch {
	case p.MinParticipants == 0 && spec.GetMinHospitals() < p.MinK(t):
		return fmt.Sprintf("site policy: min_hospitals %d is below the default minimum of %d (threshold %d + 1): with fewer contributors, the coordinator and t − 1 = %d colluding hospitals could isolate one update; a site policy's min_participants sets another minimum",
			spec.GetMinHospitals(), p.MinK(t), t, t-1)
	case len(p.ModelHashes) > 0 && !slices.Contains(p.ModelHashes, hash):
		return fmt.Sprintf("site policy: model %s is not on the accepted list", hash)
	case len(p.Purposes) > 0 && !slices.Contains(p.Purposes, spec.GetPurpose()):
		return fmt.Sprintf("site policy: purpose %q is not accepted", spec.GetPurpose())
	case spec.GetMinHospitals() < p.MinK(t):
		return fmt.Sprintf("site policy: min_hospitals %d is below the site's minimum of %d", spec.GetMinHospitals(), p.MinParticipants)
	case p.MaxRounds > 0 && spec.GetRounds() > p.MaxRounds:
		return fmt.Sprintf("site policy: %d rounds exceed the site's maximum of %d", spec.GetRounds(), p.MaxRounds)
	case spec.GetDpNoiseMultiplier() < p.MinNoiseMultiplier:
		return fmt.Sprintf("site policy: noise multiplier %g is below the site's floor of %g", spec.GetDpNoiseMultiplier(), p.MinNoiseMultiplier)
	}
	if p.EpsilonBudget > 0 {
		if spec.GetDpNoiseMultiplier() == 0 {
			return "site policy: the site has a privacy budget and the job has no differential privacy"
		}
		acc := privacy.Accountant{NoiseMultiplier: spec.GetDpNoiseMultiplier(), Delta: spec.GetDpDelta()}
		if spent+acc.Epsilon(1) > p.EpsilonBudget {
			return fmt.Sprintf("site policy: privacy budget exhausted (ε spent %.3f of %.3f)", spent, p.EpsilonBudget)
		}
	}
	return ""
}

// Within says whether contributing one more round (the site's round
// number `rounds`, counting from 1) keeps the site within its budget.
func (p Policy) Within(spec *pb.JobSpec, spentElsewhere float64, rounds int) (bool, float64) {
	if spec.GetDpNoiseMultiplier() == 0 {
		return p.EpsilonBudget == 0, 0
	}
	acc := privacy.Accountant{NoiseMultiplier: spec.GetDpNoiseMultiplier(), Delta: spec.GetDpDelta()}
	eps := acc.Epsilon(rounds)
	return p.EpsilonBudget == 0 || spentElsewhere+eps <= p.EpsilonBudget, eps
}

// File is a policy file that reloads itself when it changes on disk. A
// file that stops parsing keeps the last good policy and reports the error:
// a half-saved edit must not open the site to every job.
type File struct {
	path string

	mu      sync.Mutex
	policy  Policy
	modTime time.Time
	size    int64
	lastErr error
}

// Open loads a policy file; the path must exist and parse.
func Open(path string) (*File, error) {
	f := &File{path: path}
	if err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Current returns the policy, reloading the file first if it changed, and
// the error of the last failed reload (nil when the file is in effect).
func (f *File) Current() (Policy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.path)
	if err != nil {
		f.lastErr = fmt.Errorf("policy: %w (keeping the last good policy)", err)
		return f.policy, f.lastErr
	}
	if !fi.ModTime().Equal(f.modTime) || fi.Size() != f.size {
		if err := f.loadLocked(); err != nil {
			f.lastErr = fmt.Errorf("%w (keeping the last good policy)", err)
			return f.policy, f.lastErr
		}
	}
	return f.policy, f.lastErr
}

func (f *File) reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *File) loadLocked() error {
	fi, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return errors.New("policy: " + f.path + " is not a regular file")
	}
	if fi.Size() > MaxFileSize {
		return fmt.Errorf("policy: %s is %d bytes, more than %d", f.path, fi.Size(), MaxFileSize)
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	f.policy, f.modTime, f.size, f.lastErr = p, fi.ModTime(), fi.Size(), nil
	return nil
}
