package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// stateFile holds what a hospital must never lose or leak: its HPKE private
// key, its secret key share and the record of decryption shares given. It is
// written with mode 0600, atomically (write, fsync, rename).
const stateFile = "node-state.json"

type diskState struct {
	HPKEPrivate []byte `json:"hpke_private,omitempty"`
	HPKEPublic  []byte `json:"hpke_public,omitempty"`
	Party       []byte `json:"party,omitempty"`
	// SharesGiven holds, per "job/round", the one decryption share made for
	// it. It is written before the share leaves, so a retry or a restart
	// resends the same share and never makes a second one.
	SharesGiven map[string][]byte `json:"shares_given"`
}

func loadState(dir string) (*diskState, error) {
	st := &diskState{SharesGiven: map[string][]byte{}}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("node: %s: %w", filepath.Join(dir, stateFile), err)
	}
	if st.SharesGiven == nil {
		st.SharesGiven = map[string][]byte{}
	}
	return st, nil
}

func (st *diskState) save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}
