// Package durable replaces files so that a crash or a power loss leaves
// the old content or the new, never a mix and never a forgotten rename.
// It serves both sides: a hospital's one-per-binding records (a forgotten
// record could make a node give a second decryption share) and a
// replica's record of used login links and ended web sessions.
package durable

import (
	"os"
	"path/filepath"
)

// WriteFile replaces path with parts, mode 0600: a temporary file beside
// it, fsync'd, renamed over path, then the directory fsync'd so that the
// rename itself survives a power loss.
func WriteFile(path string, parts ...[]byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := f.Write(p); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
