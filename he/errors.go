package he

import "errors"

// Sentinel errors. Every error returned by this package wraps one of these
// (with %w) and names the field or step that failed, so callers can map them
// to a status code with errors.Is and still log something a person can act on.
var (
	// ErrMalformed: bytes that are not a valid encoding (bad header, wrong
	// length, coefficient out of range, ...).
	ErrMalformed = errors.New("he: malformed encoding")
	// ErrWrongParams: an object made under another parameter set, or an
	// unknown or unsafe parameter set.
	ErrWrongParams = errors.New("he: wrong parameter set")
	// ErrWrongShape: a vector of another length, or an argument outside the
	// range the parameters allow.
	ErrWrongShape = errors.New("he: wrong shape")
	// ErrBindingMismatch: an update bound to another (job, round, model), or
	// made with another clip norm.
	ErrBindingMismatch = errors.New("he: binding mismatch")
	// ErrTooManyParties: an aggregate would exceed Params.MaxParties.
	ErrTooManyParties = errors.New("he: too many parties in one aggregate")
	// ErrTooFewShares: fewer than t decryption shares, or a missing
	// ceremony share.
	ErrTooFewShares = errors.New("he: too few shares")
	// ErrShareMismatch: a share for another aggregate, another active set,
	// another ceremony, another recipient, or from a party outside the set.
	ErrShareMismatch = errors.New("he: share mismatch")
	// ErrDuplicateShare: two shares from the same party.
	ErrDuplicateShare = errors.New("he: duplicate share")
	// ErrInvalidValue: NaN, Inf, a non-positive clip norm, a count too large.
	ErrInvalidValue = errors.New("he: invalid value")
	// ErrNotReady: the party has not finished the key ceremony.
	ErrNotReady = errors.New("he: party not ready")
	// ErrDecrypt: sealed share that does not open, or a decrypted aggregate
	// that fails its integrity checks (a wrong or tampered decryption share).
	ErrDecrypt = errors.New("he: decryption failed")
	// ErrEmptyAggregate: Aggregator.Result before any Add.
	ErrEmptyAggregate = errors.New("he: empty aggregate")
)
