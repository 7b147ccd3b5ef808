// Command gencsv writes a synthetic region's hospitals as CSV files (a
// header row, 15 feature columns of vital signs, lactate and routine labs,
// and a 0/1 "deteriorated" label) for trying `regionfl node run` without
// patient data:
//
//	go run ./faulttest/gencsv -dir data -hospitals 3 -seed 1
//
// It prints one line per file: the hospital name and the path.
package main

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"

	"regionfl/faulttest"
)

func main() {
	dir := flag.String("dir", ".", "directory for the CSV files")
	n := flag.Int("hospitals", 3, "number of hospitals (hospital-1 … hospital-N)")
	seed := flag.Int64("seed", 1, "seed of the synthetic region")
	flag.Parse()
	paths, features, err := faulttest.WriteSyntheticCSVs(*dir, *n, *seed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gencsv:", err)
		os.Exit(1)
	}
	for _, name := range slices.Sorted(maps.Keys(paths)) {
		fmt.Printf("%s %s\n", name, paths[name])
	}
	fmt.Fprintf(os.Stderr, "gencsv: %d hospitals, %d features, label column %q\n", len(paths), features, faulttest.LabelColumn)
}
