// Package he is regionfl's homomorphic aggregation: hospitals encrypt their
// model updates under a key nobody holds, the coordinator sums ciphertexts,
// and any t of the N hospitals of a region jointly decrypt the sum, and
// only the sum. All lattigo code of the module lives here, so a move from
// lattigo v5 to v6 stays inside this package.
//
// # Scheme
//
// Multiparty threshold RLWE (lattigo v5, packages core/rlwe, mhe and ring)
// with integer packing in the high bits, keyed by contributor:
//
//   - Key ceremony. Each hospital i draws a ternary secret s_i (NewParty).
//     Nothing is ever encrypted under a collective public key, so the
//     ceremony makes none: a hospital's key is used by its own
//     encryptions and, through its Shamir shares, by decryptions of sums
//     it contributed to, nothing else.
//   - Threshold. Hospital i evaluates a random polynomial f_i of degree t-1
//     with f_i(0) = s_i at every point j and seals f_i(j) to hospital j with
//     HPKE (ML-KEM-768+X25519, HKDF-SHA256, AES-256-GCM; the HPKE info binds
//     the parameter set, sender, recipient and ceremony). The coordinator
//     relays the sealed shares and cannot open them. Hospital j keeps every
//     f_i(j) apart; any t hospitals reconstruct any sum Σ_{i∈S} s_i by
//     Lagrange interpolation, inside the decryption protocol (never in the
//     clear). A large region keeps the shares with a committee of c
//     parties (NewCommitteeParty: points 1..c): every party seals c
//     shares, each member keeps N, and the decryption noise, which grows
//     with t <= c, stays within the parameter set whatever N is. (Which
//     hospitals hold points 1..c is the caller's: regionfl draws them per
//     key epoch, identity.EpochPoints.) A share travels and is kept mod Q
//     only, each residue packed to its prime's bit width (SealedShareSize):
//     decryption never uses its P part.
//   - Encryption (Party.Encrypt). An update is clipped to L2 norm <= clip,
//     scaled by 1/clip so every value is in [-1, 1], quantized to b bits
//     with unbiased stochastic rounding (the node's own randomness), and
//     packed several fields per ring coefficient, followed by the sample
//     count's digits and a field holding 1 (see Params for the layout and
//     how each byte is spent). It is encrypted under the hospital's own
//     key: c0 = -a·s_i + q_E·m + e with a expanded from the ceremony seed,
//     the update's binding and the ciphertext index, so a is public, the
//     same for every update of one aggregate, and chosen by nobody. Only
//     c0 travels, each residue packed to its prime's bit width. NaN and
//     Inf are refused.
//   - Aggregation (Aggregator). Addition of c0, streaming, in any order, in
//     place, at most MaxParties updates: the headroom bits of every field
//     hold the sum of that many, so no field carries into the next and no
//     residue wraps (by construction, and checked at decryption).
//   - Decryption (Party.DecryptionShare, Combine). The coordinator names
//     the contributor set S and t active hospitals; each sends
//     a·λ_j·Σ_{i∈S} f_i(j) + e_j for every ciphertext, with smudging noise
//     e_j of std 2^24; the shares sum to a·Σ_{i∈S} s_i, which added to
//     Σ c0 leaves q_E·Σ m + E. The residue modulo the noise prime q_E is E
//     itself, which gives Σ m exactly. Shares name the aggregate's digest,
//     S and the active set. Combine checks the decoded plaintext's
//     structure (every field within what |S| updates can make, the party
//     field equal to |S|, zero padding, the norm bound), which a wrong or
//     tampered share, or an aggregate that is not the sum of exactly S's
//     updates, breaks with overwhelming probability.
//   - Key epochs. The smudging argument covers MaxDecryptions decrypted
//     ciphertexts per key, so a region re-keys: the ceremony runs again
//     on EpochSeed(seed, epoch), which gives every epoch independent
//     secrets s_i, Shamir polynomials, HPKE contexts and masks a. Parties
//     of different epochs share nothing, and an update's epoch is the
//     Party that encrypted it. Callers count decryptions per epoch and
//     erase a Party (and the HPKE key its shares were sealed to) once no
//     aggregate of its epoch is left to decrypt.
//
// Why the coordinator cannot fake a contributor: it would need -a·s_i +
// small for a fresh a without s_i (an RLWE sample). A set S naming a
// hospital whose c0 is missing decrypts to noise masked by a·s_i; so does
// an update of another binding (its a differs). What it can still do is
// choose which subset of the real updates to name: the decryptors decide
// which sets they serve (at least K contributors, one set per binding), and
// a hospital encrypts once per binding (two vectors under one a give away
// their difference).
//
// Why the coordinator cannot add to a sum: adding an encoded plaintext Δ
// to Σ c0 needs no key, and the shares, which depend only on a and S,
// would decrypt Σ m + Δ: a model of the coordinator's choosing, which the
// sites would then measure. So each contributor signs, with its approval
// of S, the fingerprint of its own update (Update.Fingerprint) under a
// challenge derived from the digest of the aggregate the round closed with
// (AggregateChallenge). The fingerprint is linear modulo each prime, so
// CheckFold compares the sum of the contributors' fingerprints with the
// aggregate's own: an aggregate that differs from the sum by Δ ≠ 0 passes
// only if every one of fingerprintReps pseudorandom inner products with Δ
// vanishes modulo some prime q where Δ is nonzero, probability (2/q)^4 <=
// 2^-128, and the challenge is fixed by the aggregate, so the coordinator
// cannot choose Δ after it. The fingerprint is a function of the update's
// bytes, which the coordinator holds anyway: it reveals nothing new.
//
// # Parameters
//
// Two named sets, chosen by region size (ParamsFor): "rlwe-n13-b16-p64"
// (RegionParams, up to 64 hospitals) and "rlwe-n13-b16-p1024"
// (LargeRegionParams, up to 1,024). Both have ring degree 2^13, 16-bit
// quantization, message primes holding two fields each, a noise prime
// sized for the smudging, and one auxiliary prime P (unused since the
// ceremony stopped making a collective public key). RegionParams spends 3.52 bytes per value (169 bits for six
// values per coefficient), 0.88x float32; LargeRegionParams 4.44 bytes
// (142 bits for four). Quantization costs a relative error of about
// sqrt(length/(6·K))/(2^15·|sum|/clip) on a sum of K updates: each value
// is off by less than one step of clip/(2^15-1) per update, unbiased.
//
// Security: log2(QP) = 205 (RegionParams) and 178 (LargeRegionParams),
// both <= 218, the HomomorphicEncryption.org standard's bound for 128-bit
// security at N = 2^13 with a uniform ternary secret and error σ = 3.2. The
// smudging width is a field of Params with its argument written out
// there: a Rényi-divergence bound that covers 2^12 decrypted ciphertexts
// per key epoch. Params.Validate checks all of these bounds.
//
// # Who sees what
//
//   - A hospital sees its own update, the Shamir shares sealed to it, and the aggregates it helps decrypt (as
//     ciphertexts). Its decryption share is an RLWE sample; it reveals
//     nothing about the keys it holds shares of.
//   - The coordinator sees sealed Shamir shares (opaque),
//     ciphertexts, decryption shares and the decrypted sum of values and of
//     sample counts. It never sees one hospital's update or count in the
//     clear, unless t hospitals collude with it, or t decryptors agree to
//     decrypt a set S of one contributor: the decryptors check S (enough
//     distinct contributors, one set per binding) before sending a share.
//   - Fewer than t hospitals together learn nothing beyond their own data.
//
// Not covered: a malicious hospital can make decryption fail (a bad
// Shamir share is not detected at the ceremony, only by
// Combine's checks), but cannot learn more than the sum. Threshold 1 is
// allowed here (the coordinator and nodes refuse it), and then every
// hospital holds every key.
//
// # Encodings
//
// Every encoding starts with a magic, a version and a kind byte, then the
// parameter set's tag; polynomials are raw coefficients. Decoders compute
// the exact length from Params and check it before allocating anything,
// and never hand outside bytes to lattigo's decoders (which allocate
// without bound on a short input). Errors wrap the sentinel values of
// errors.go and name the field that failed.
//
// Nothing here logs. Callers must not log key material, sealed shares or
// ciphertexts: log sizes and Digest values.
package he
