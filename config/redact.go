package config

import "fmt"

// fmt prints a pointer to a struct without a Format method, met inside
// another value with a verb that does not apply to pointers (%s, %q), as
// "%!s(*T=&{…})" and, in that error path, calls no method of the fields: a
// wxphone.Secret inside would print in full. Config and App therefore
// format themselves, as fmt would print them, through a copy of a type
// without methods whose Secret fields keep their redaction.

// Format prints the Config with every secret redacted, for every verb.
func (c Config) Format(f fmt.State, verb rune) {
	type plain Config
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(c))
}

// Format prints the App with its AppSecret redacted, for every verb.
func (a App) Format(f fmt.State, verb rune) {
	type plain App
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(a))
}
