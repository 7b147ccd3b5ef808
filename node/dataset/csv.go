package dataset

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regionfl/jobspec"
	"strconv"
	"strings"
)

// Limits on CSV input. They are enforced while reading, before anything of
// that size is allocated, so that a malformed or hostile file fails fast
// with a clear error instead of exhausting a hospital node's memory.
const (
	// MaxColumns bounds the number of columns in the header.
	MaxColumns = 1000
	// MaxCellBytes bounds every header name and every parsed cell (the
	// label and the selected feature columns). A float64 never needs more
	// than about 25 characters.
	MaxCellBytes = 64
	// MaxValues bounds the parsed table: rows kept × feature columns, i.e.
	// 128 MiB of float64.
	MaxValues = 16 << 20
	// maxRecordBytes bounds one raw record, so that encoding/csv never
	// buffers more: every column at the cell limit with each byte a doubled
	// quote, plus its quotes and separator. Columns that are not parsed
	// (free text, say) only count against this.
	maxRecordBytes = MaxColumns * (2*MaxCellBytes + 3)
)

// CSVOptions say how to read a site's CSV file.
type CSVOptions struct {
	// Label is the name of the 0/1 label column; it must exist.
	Label string
	// Columns are the feature columns, in this order; nil or empty means
	// every column except the label, in file order. Columns that are not
	// selected are not parsed and may hold anything.
	Columns []string
	// Missing is what to do with a row whose label or selected feature is
	// missing or unusable (empty, "?", "NA", "NaN", not a number, or
	// infinite): "error" (or "") fails naming the file, line and column;
	// "drop" skips the row and counts it.
	Missing string
}

// Dropped counts the rows a table lost under jobspec.MissingDrop, and where the
// first of them is (never its values, which are patient data).
type Dropped struct {
	Rows   int
	Line   int    // 1-based line of the first dropped row in its file
	Column string // the first unusable column in that row
}

// ReadCSV reads a site's table from the CSV file at path: a header row, then
// one row per patient, with the label column holding 0 or 1 and every
// selected feature a finite number. It returns the table and the rows
// dropped under Missing "drop". Errors name the file, the 1-based line
// (the header is line 1) and the column.
func ReadCSV(path string, opts CSVOptions) (t Table, dropped Dropped, err error) {
	f, err := os.Open(path)
	if err != nil {
		return Table{}, Dropped{}, err
	}
	defer f.Close()
	return ParseCSV(f, path, opts)
}

// ParseCSV is ReadCSV reading from r; name stands for the file in errors.
// Surrounding spaces in names and cells are ignored, as is a UTF-8 byte
// order mark; blank lines are skipped. Only binary labels are supported: a
// label that is a number other than 0 or 1 is an error even under "drop",
// since dropping it would silently discard a whole class.
func ParseCSV(r io.Reader, name string, opts CSVOptions) (Table, Dropped, error) {
	var drop bool
	switch opts.Missing {
	case "", jobspec.MissingError:
	case jobspec.MissingDrop:
		drop = true
	default:
		return Table{}, Dropped{}, fmt.Errorf("%s: unknown missing-value policy %q (want %q or %q)", name, opts.Missing, jobspec.MissingError, jobspec.MissingDrop)
	}
	if opts.Label == "" {
		return Table{}, Dropped{}, fmt.Errorf("%s: no label column given", name)
	}

	lim := &recordLimiter{r: r, line: 1, recordLine: 1}
	cr := csv.NewReader(lim)
	header, err := cr.Read()
	if err == io.EOF {
		return Table{}, Dropped{}, fmt.Errorf("%s: empty file (a header row is required)", name)
	}
	if err != nil {
		return Table{}, Dropped{}, csvError(name, lim, err, 0, 0)
	}
	headerLine, _ := cr.FieldPos(0)
	// cr now checks every record against the header's field count, since
	// FieldsPerRecord was 0 when it read the header; and as the header is
	// kept, only now may it reuse its record slice.
	cr.ReuseRecord = true
	label, cols, err := resolveColumns(header, opts)
	if err != nil {
		return Table{}, Dropped{}, fmt.Errorf("%s:%d: %w", name, headerLine, err)
	}

	// fields are the columns parsed, the label first; names name them.
	fields := append([]int{label}, cols...)
	names := make([]string, len(fields))
	for k, c := range fields {
		names[k] = strings.TrimSpace(header[c])
	}
	t := Table{Features: names[1:]}
	nf := len(cols)
	var slab []float64 // rows are carved out of slabs, not allocated one by one
	var dropped Dropped
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Table{}, Dropped{}, csvError(name, lim, err, len(rec), len(header))
		}
		line, _ := cr.FieldPos(0)
		if (t.Len()+1)*nf > MaxValues {
			return Table{}, Dropped{}, fmt.Errorf("%s:%d: more than %d values (rows × features); split the file", name, line, MaxValues)
		}
		if len(slab) < len(fields) {
			slab = make([]float64, len(fields)*1024)
		}
		vals := slab[:len(fields):len(fields)] // label, then the features

		// Hard errors fail whatever the policy; soft ones (unusable cells)
		// fail under "error" and drop the row under "drop", once the rest
		// of the row has been checked for hard errors.
		skip := ""
		for k, c := range fields {
			v, soft, hard := parseCell(rec[c])
			if k == 0 && soft == nil && hard == nil && v != 0 && v != 1 {
				hard = fmt.Errorf("label %q is not 0 or 1 (only binary labels are supported)", strings.TrimSpace(rec[c]))
			}
			if soft != nil && !drop {
				hard = soft
			}
			if hard != nil {
				return Table{}, Dropped{}, fmt.Errorf("%s:%d: column %q: %w", name, line, names[k], hard)
			}
			if soft != nil && skip == "" {
				skip = names[k]
			}
			vals[k] = v
		}
		if skip != "" {
			if dropped.Rows == 0 {
				dropped.Line, dropped.Column = line, skip
			}
			dropped.Rows++
			continue
		}
		slab = slab[len(fields):]
		t.Y = append(t.Y, vals[0])
		t.X = append(t.X, vals[1:])
	}
	if t.Len() == 0 {
		if dropped.Rows > 0 {
			return Table{}, dropped, fmt.Errorf("%s: no rows left: all %d data rows had missing or unusable values and were dropped", name, dropped.Rows)
		}
		return Table{}, Dropped{}, fmt.Errorf("%s: no data rows after the header", name)
	}
	return t, dropped, nil
}

// resolveColumns checks the header and returns the index of the label
// column and of the feature columns, in feature order.
func resolveColumns(header []string, opts CSVOptions) (label int, cols []int, err error) {
	if len(header) > MaxColumns {
		return 0, nil, fmt.Errorf("%d columns, more than the limit of %d", len(header), MaxColumns)
	}
	index := make(map[string]int, len(header))
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\uFEFF")
			header[0] = h
		}
		h = strings.TrimSpace(h)
		switch prev, dup := index[h]; {
		case h == "":
			return 0, nil, fmt.Errorf("column %d has no name", i+1)
		case len(h) > MaxCellBytes:
			return 0, nil, fmt.Errorf("column %d: name longer than %d bytes", i+1, MaxCellBytes)
		case dup:
			return 0, nil, fmt.Errorf("duplicate column %q (columns %d and %d)", h, prev+1, i+1)
		}
		index[h] = i
	}
	label, ok := index[opts.Label]
	if !ok {
		return 0, nil, fmt.Errorf("no label column %q in the header", opts.Label)
	}
	if len(opts.Columns) == 0 {
		for i := range header {
			if i != label {
				cols = append(cols, i)
			}
		}
		if len(cols) == 0 {
			return 0, nil, fmt.Errorf("no feature columns besides the label %q", opts.Label)
		}
		return label, cols, nil
	}
	seen := make(map[string]bool, len(opts.Columns))
	for _, c := range opts.Columns {
		i, ok := index[c]
		switch {
		case !ok:
			return 0, nil, fmt.Errorf("no column %q in the header", c)
		case i == label:
			return 0, nil, fmt.Errorf("column %q is the label, it cannot also be a feature", c)
		case seen[c]:
			return 0, nil, fmt.Errorf("column %q selected twice", c)
		}
		seen[c] = true
		cols = append(cols, i)
	}
	return label, cols, nil
}

// errCellTooLong is a hard error: a cell that long is not a number, and
// the limit exists to refuse such input outright.
var errCellTooLong = fmt.Errorf("cell longer than %d bytes", MaxCellBytes)

// parseCell parses one feature cell. soft reports a missing or unusable
// value (subject to the missing-value policy), hard an error that no
// policy excuses.
func parseCell(s string) (v float64, soft, hard error) {
	if len(s) > MaxCellBytes {
		return 0, nil, errCellTooLong
	}
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return 0, errors.New("empty cell"), nil
	case s == "?" || strings.EqualFold(s, "NA"):
		return 0, fmt.Errorf("missing value %q", s), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("%q is out of the range of a float64", s), nil
	case err != nil:
		return 0, fmt.Errorf("%q is not a number", s), nil
	case math.IsNaN(v):
		return 0, fmt.Errorf("missing value %q", s), nil
	case math.IsInf(v, 0):
		return 0, fmt.Errorf("infinite value %q", s), nil
	}
	return v, nil, nil
}

// csvError turns an error from encoding/csv into one naming the file and
// line. got and want are the record's and the header's number of fields,
// for a wrong field count.
func csvError(name string, lim *recordLimiter, err error, got, want int) error {
	var pe *csv.ParseError
	isParse := errors.As(err, &pe)
	switch {
	// The limiter reads ahead of csv, so it may have tripped on a record
	// after the one csv complains about; otherwise its error is the cause
	// and csv's view of the truncated record is beside the point.
	case lim.err != nil && (!isParse || pe.StartLine >= lim.recordLine):
		return fmt.Errorf("%s:%d: %w", name, lim.recordLine, lim.err)
	case isParse && errors.Is(pe.Err, csv.ErrFieldCount):
		return fmt.Errorf("%s:%d: %d fields, but the header has %d", name, pe.StartLine, got, want)
	case isParse:
		return fmt.Errorf("%s:%d: %w (byte %d of the line)", name, pe.Line, pe.Err, pe.Column)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// recordLimiter sits between encoding/csv and the input and fails once one
// record exceeds maxRecordBytes, before csv has buffered it. A record ends
// at a newline outside quotes; the parity of the quotes seen tells whether
// a newline is inside a quoted field (an escaped "" flips it twice), which
// is exact for any input csv accepts.
type recordLimiter struct {
	r          io.Reader
	line       int  // 1-based line of the next byte
	recordLine int  // line where the current record starts
	size       int  // bytes of the current record so far
	quoted     bool // inside a quoted field
	err        error
}

func (l *recordLimiter) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for _, c := range p[:n] {
		l.size++
		switch {
		case c == '"':
			l.quoted = !l.quoted
		case c == '\n':
			l.line++
			if !l.quoted {
				l.recordLine, l.size = l.line, 0
			}
		}
		if l.size > maxRecordBytes {
			l.err = fmt.Errorf("record longer than %d bytes", maxRecordBytes)
			return 0, l.err
		}
	}
	return n, err
}
