package dataset

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// HeartDiseaseFiles are the four UCI Heart Disease "processed" files, one
// per centre in FLamby's centre order, with the SHA-256 of the byte-exact
// UCI release (DOI 10.24432/C52P4X, CC BY 4.0). HeartDisease refuses other
// bytes, so that every result is on the published benchmark data;
// scripts/fetch-heart-disease.sh checks the same sums.
var HeartDiseaseFiles = []struct{ Site, File, SHA256 string }{
	{"cleveland", "processed.cleveland.data", "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8"},
	{"hungary", "processed.hungarian.data", "d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796"},
	{"switzerland", "processed.switzerland.data", "834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314"},
	{"va", "processed.va.data", "e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f"},
}

const (
	// heartMaxFileBytes bounds what HeartDisease reads into memory; the
	// largest real file is 18 KiB.
	heartMaxFileBytes = 1 << 20
	// heartTrainFraction is FLamby's train share per centre; its test
	// share is 1 − 0.66, as a float64 (0.33999999999999997).
	heartTrainFraction = 0.66
	// FLambySplitSeed is the random_state with which FLamby splits every
	// centre.
	FLambySplitSeed = 43
)

// heartColumns are the 14 columns of the UCI files, in file order.
var heartColumns = [...]string{"age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
	"thalach", "exang", "oldpeak", "slope", "ca", "thal", "num"}

// Indices into heartColumns of the columns the protocol keeps; slope, ca
// and thal are dropped because most centres barely record them.
const (
	heartCP      = 2
	heartRestECG = 6
	heartNum     = 13
)

// heartNumeric are the columns kept as they are, in feature order.
var heartNumeric = []int{0, 1, 3, 4, 5, 7, 8, 9}

// heartKept are all the columns the protocol reads; a '?' in any of them
// drops the row.
var heartKept = append(append([]int{}, heartNumeric...), heartCP, heartRestECG, heartNum)

// heartFeatures are the 13 features HeartDisease produces, in column order:
// the numeric columns, then cp (chest-pain type 1–4) and restecg (resting
// ECG 0–2) one-hot encoded without their first level, as in FLamby.
var heartFeatures = []string{"age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak",
	"cp_2", "cp_3", "cp_4", "restecg_1", "restecg_2"}

// HeartDisease loads FLamby's Fed-Heart-Disease benchmark from dir, which
// must hold the files of HeartDiseaseFiles with their exact checksums (see
// scripts/fetch-heart-disease.sh). It follows FLamby's protocol: slope, ca
// and thal are dropped, then every row with a missing value (303, 261, 46
// and 130 rows remain); the label is num > 0; cp and restecg are one-hot
// encoded into the 13 features of heartFeatures; each centre is split
// 66/34 into train and test (199/104, 172/89, 30/16, 85/45) exactly as
// FLamby's scikit-learn call train_test_split(train_size=0.66,
// test_size=1−0.66, random_state=splitSeed, stratify=labels) splits it,
// stratified when each label has more than 2 rows, as FLamby decides.
// splitSeed FLambySplitSeed gives FLamby's own split; the train rows come
// in the order train_test_split returns them.
//
// The tables are not standardized: how to scale them (per centre, as
// FLamby does, or with region-wide statistics) is the caller's experiment.
func HeartDisease(dir string, splitSeed uint32) ([]Site, error) {
	sites := make([]Site, 0, len(HeartDiseaseFiles))
	for _, f := range HeartDiseaseFiles {
		path := filepath.Join(dir, f.File)
		data, err := readVerified(path, f.SHA256)
		if err != nil {
			return nil, fmt.Errorf("heart disease data: %w", err)
		}
		t, err := parseHeartDisease(bytes.NewReader(data), path)
		if err != nil {
			return nil, fmt.Errorf("heart disease data: %w", err)
		}
		train, test, err := flambySplit(t, splitSeed)
		if err != nil {
			return nil, fmt.Errorf("heart disease data: %s: %w", path, err)
		}
		sites = append(sites, Site{Name: f.Site, Train: train, Test: test})
	}
	return sites, nil
}

// flambySplit splits one centre as FLamby's dataset does: sizes as
// scikit-learn rounds them (test ceil, train floor), stratified by label
// only when both labels have more than 2 rows.
func flambySplit(t Table, seed uint32) (train, test Table, err error) {
	n := float64(t.Len())
	nTest := int(math.Ceil((1.0 - heartTrainFraction) * n))
	nTrain := int(math.Floor(heartTrainFraction * n))
	var count [2]int
	for _, y := range t.Y {
		count[int(y)]++
	}
	stratify := count[0] > 2 && count[1] > 2
	trainIdx, testIdx, err := trainTestSplit(t.Y, nTrain, nTest, seed, stratify)
	if err != nil {
		return Table{}, Table{}, err
	}
	return t.rows(trainIdx), t.rows(testIdx), nil
}

// readVerified reads the regular file at path, at most heartMaxFileBytes,
// and checks its SHA-256 against wantHex.
func readVerified(path, wantHex string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (fetch the files with scripts/fetch-heart-disease.sh)", err)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if info.Size() > heartMaxFileBytes {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d of any UCI file", path, info.Size(), heartMaxFileBytes)
	}
	// The limit also holds if the file grows after Stat.
	data, err := io.ReadAll(io.LimitReader(f, heartMaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > heartMaxFileBytes {
		return nil, fmt.Errorf("%s: more than %d bytes", path, heartMaxFileBytes)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != wantHex {
		return nil, fmt.Errorf("%s: SHA-256 is %x, want %s: not the UCI file (fetch it again with scripts/fetch-heart-disease.sh)", path, sum, wantHex)
	}
	return data, nil
}

// parseHeartDisease reads one headerless UCI file and applies the FLamby
// protocol's column selection, missing-row dropping, label and one-hot
// encoding. name stands for the file in errors.
func parseHeartDisease(r io.Reader, name string) (Table, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = len(heartColumns)
	cr.ReuseRecord = true
	t := Table{Features: append([]string(nil), heartFeatures...)}
rows:
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return t, nil
		}
		var pe *csv.ParseError
		switch {
		case errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount):
			return Table{}, fmt.Errorf("%s:%d: %d fields, want the %d columns %s", name, pe.StartLine, len(rec), len(heartColumns), strings.Join(heartColumns[:], ","))
		case errors.As(err, &pe):
			return Table{}, fmt.Errorf("%s:%d: %w", name, pe.Line, pe.Err)
		case err != nil:
			return Table{}, fmt.Errorf("%s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)

		var vals [len(heartColumns)]float64 // only heartKept are set
		for _, c := range heartKept {
			s := strings.TrimSpace(rec[c])
			if s == "?" {
				continue rows // FLamby drops every row with a missing value
			}
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return Table{}, fmt.Errorf("%s:%d: column %q: %q is not a finite number or '?'", name, line, heartColumns[c], s)
			}
			vals[c] = v
		}

		cp, restecg, num := vals[heartCP], vals[heartRestECG], vals[heartNum]
		switch {
		case cp != 1 && cp != 2 && cp != 3 && cp != 4:
			return Table{}, fmt.Errorf("%s:%d: column \"cp\": %v is not a chest-pain type 1, 2, 3 or 4", name, line, cp)
		case restecg != 0 && restecg != 1 && restecg != 2:
			return Table{}, fmt.Errorf("%s:%d: column \"restecg\": %v is not a resting ECG result 0, 1 or 2", name, line, restecg)
		case num != 0 && num != 1 && num != 2 && num != 3 && num != 4:
			return Table{}, fmt.Errorf("%s:%d: column \"num\": %v is not a diagnosis 0 to 4", name, line, num)
		}
		row := make([]float64, 0, len(heartFeatures))
		for _, c := range heartNumeric {
			row = append(row, vals[c])
		}
		row = append(row, indicator(cp == 2), indicator(cp == 3), indicator(cp == 4),
			indicator(restecg == 1), indicator(restecg == 2))
		t.X = append(t.X, row)
		t.Y = append(t.Y, indicator(num > 0))
	}
}

func indicator(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
