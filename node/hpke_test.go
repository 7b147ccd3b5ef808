package node

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The ceremony key made at init is kept 0600, never overwritten, and
// refused when others can read it.
func TestHPKEKeyFile(t *testing.T) {
	dir := t.TempDir()
	path, err := InitHPKEKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	priv, pub, err := LoadHPKEKey(path)
	if err != nil || len(priv) == 0 || len(pub) == 0 || bytes.Equal(priv, pub) {
		t.Fatalf("load: %v", err)
	}
	if _, err := InitHPKEKey(dir); err == nil {
		t.Fatal("an existing key was overwritten")
	}
	if found, _ := HPKEKeyBeside(filepath.Join(dir, "tls.key")); found != path {
		t.Fatalf("beside tls.key: %q", found)
	}
	if found, _ := HPKEKeyBeside(filepath.Join(t.TempDir(), "tls.key")); found != "" {
		t.Fatalf("found %q in an empty directory", found)
	}
	os.Chmod(path, 0o644)
	if _, _, err := LoadHPKEKey(path); err == nil {
		t.Fatal("a world-readable key was loaded")
	}
}
