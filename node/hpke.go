package node

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"regionfl/he"
)

// HPKEKeyFile is the name of the file `regionfl node init` writes next to
// the node's TLS key: the HPKE key pair the key ceremony's Shamir shares
// are sealed to. It never leaves the hospital.
const HPKEKeyFile = "hpke.key"

const (
	pemHPKEPrivate = "REGIONFL HPKE PRIVATE KEY"
	pemHPKEPublic  = "REGIONFL HPKE PUBLIC KEY"
	maxHPKEKeyFile = 64 << 10
)

// InitHPKEKey creates dir/hpke.key (0600); an existing key is never
// overwritten.
func InitHPKEKey(dir string) (string, error) {
	path := filepath.Join(dir, HPKEKeyFile)
	if _, err := os.Stat(path); err == nil {
		return "", fmt.Errorf("node: %s already exists", path)
	}
	priv, pub, err := he.NewHPKEKey()
	if err != nil {
		return "", err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: pemHPKEPrivate, Bytes: priv})
	b = append(b, pem.EncodeToMemory(&pem.Block{Type: pemHPKEPublic, Bytes: pub})...)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// LoadHPKEKey reads a key pair written by InitHPKEKey.
func LoadHPKEKey(path string) (priv, pub []byte, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if fi.Size() > maxHPKEKeyFile {
		return nil, nil, fmt.Errorf("node: %s is %d bytes, too large for a key", path, fi.Size())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, nil, fmt.Errorf("node: %s is readable by others (mode %v); it must be 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	for len(b) > 0 {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		switch block.Type {
		case pemHPKEPrivate:
			priv = block.Bytes
		case pemHPKEPublic:
			pub = block.Bytes
		}
	}
	if priv == nil || pub == nil {
		return nil, nil, fmt.Errorf("node: %s holds no HPKE key pair", path)
	}
	return priv, pub, nil
}

// HPKEKeyBeside returns the path of hpke.key next to a TLS key file, or ""
// when there is none (the node then makes its key on first start).
func HPKEKeyBeside(tlsKey string) (string, error) {
	path := filepath.Join(filepath.Dir(tlsKey), HPKEKeyFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	return path, nil
}
