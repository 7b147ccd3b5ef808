// This file holds the one non-test helper of the package: writing a
// synthetic region's hospitals as CSV files, which the tests, the Docker
// test's containers and scripts/region-local.sh (through faulttest/gencsv)
// use as the sites' data.

package faulttest

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"regionfl/node/dataset"
)

// LabelColumn is the name of the 0/1 label column in the CSV files.
const LabelColumn = "deteriorated"

// WriteSyntheticCSVs writes the hospitals of a synthetic non-IID region
// (dataset.Synthetic, case-mix shift 1) to dir/<name>.csv, one file per
// hospital with a header row and the label column last, and returns the
// paths by hospital name (hospital-1 … hospital-N) and the number of
// feature columns.
func WriteSyntheticCSVs(dir string, hospitals int, seed int64) (paths map[string]string, features int, err error) {
	sites, _, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: hospitals, Seed: seed, CaseMixShift: 1})
	if err != nil {
		return nil, 0, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, err
	}
	paths = map[string]string{}
	for _, s := range sites {
		p := filepath.Join(dir, s.Name+".csv")
		if err := writeCSV(p, s.Train, s.Test); err != nil {
			return nil, 0, err
		}
		paths[s.Name] = p
		features = len(s.Train.Features)
	}
	return paths, features, nil
}

func writeCSV(path string, tables ...dataset.Table) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	w := csv.NewWriter(f)
	header := append(append([]string{}, tables[0].Features...), LabelColumn)
	if err := w.Write(header); err != nil {
		return err
	}
	for _, t := range tables {
		for i, row := range t.X {
			rec := make([]string, 0, len(row)+1)
			for _, v := range row {
				rec = append(rec, strconv.FormatFloat(v, 'g', 6, 64))
			}
			rec = append(rec, strconv.Itoa(int(t.Y[i])))
			if err := w.Write(rec); err != nil {
				return err
			}
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
