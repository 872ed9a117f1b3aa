package wxphone

import "fmt"

// fmt prints a pointer to a struct that has no Format method, met inside
// another value (a slice, a struct field) with a verb that does not apply
// to pointers (%s, %q), as "%!s(*T=&{…})" and, in that error path, calls no
// method of the fields: a PhoneNumber, SessionKey, Secret or Token inside
// would print in full. The structs below that hold one therefore format
// themselves: as fmt would print them, through a copy of a type without
// methods whose fields keep their masking types.

// Format prints the PhoneInfo with both numbers masked, for every verb.
func (p PhoneInfo) Format(f fmt.State, verb rune) {
	type plain PhoneInfo
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(p))
}

// Format prints the Session with its session_key redacted, for every verb.
func (s Session) Format(f fmt.State, verb rune) {
	type plain Session
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(s))
}

// Format prints the PhoneRequest with its code redacted, for every verb.
func (r PhoneRequest) Format(f fmt.State, verb rune) {
	type plain PhoneRequest
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(r))
}

// Format prints the Config with its Secret redacted (and a token source's
// token as its fingerprint), for every verb.
func (c Config) Format(f fmt.State, verb rune) {
	type plain Config
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(c))
}

// Format prints the source with its token's fingerprint, never the token:
// fmt cannot call the methods of the unexported field that holds it.
func (s staticSource) Format(f fmt.State, _ rune) {
	_, _ = fmt.Fprintf(f, "StaticTokenSource(%v)", s.tok)
}
