package node

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"regionfl/durable"
)

// A node data file holding one record (a kept update, a model chain link)
// is one JSON line of metadata, then the bytes the metadata describes. It
// is written atomically, and read as if it came from outside: the
// metadata line is bounded, and the bytes are read only once the metadata
// has been checked, up to the length it allows.

// maxMetaLine bounds the metadata line of a node data file.
const maxMetaLine = 4096

// writeMetaFile replaces the file at path (its directory made if need be)
// with meta's JSON line, then raw.
func writeMetaFile(path string, meta any, raw []byte) error {
	line, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return durable.WriteFile(path, append(line, '\n'), raw)
}

// readMetaFile reads the metadata line of the file at path into meta and,
// when size is not nil, the bytes after it: size, called once meta is
// read, checks it and says how many bytes there must be.
func readMetaFile(path string, meta any, size func() (int, error)) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, maxMetaLine)).ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("no metadata line: %w", err)
	}
	if err := json.Unmarshal(line, meta); err != nil {
		return nil, err
	}
	if size == nil {
		return nil, nil
	}
	n, err := size()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("the metadata says %d bytes follow", n)
	}
	if _, err := f.Seek(int64(len(line)), io.SeekStart); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(f, int64(n)+1))
	if err != nil {
		return nil, err
	}
	if len(raw) != n {
		return nil, fmt.Errorf("%d bytes after the metadata, which says %d", len(raw), n)
	}
	return raw, nil
}

// removeFile removes a node data file; one already gone is no error.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
