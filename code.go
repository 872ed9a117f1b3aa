package wxphone

import "strconv"

// MaxCodeLen bounds the length of a code accepted by Client.PhoneNumber and
// Client.Code2Session. Real phone codes are 64 hexadecimal characters (the
// documentation's example, and every code seen in public logs); wx.login codes
// are 32 characters. 128 leaves twice the longest real code as headroom while
// refusing junk long before it costs a network round trip.
const MaxCodeLen = 128

// ValidateCode checks a phone or login code before any network call: it must
// be non-empty, at most MaxCodeLen bytes, and printable ASCII without spaces
// or control characters. The error never contains the code.
func ValidateCode(code string) error {
	return validateCode("code", code)
}

func validateCode(field, code string) error {
	if code == "" {
		return &InputError{Field: field, Reason: "empty"}
	}
	if len(code) > MaxCodeLen {
		return &InputError{Field: field, Reason: "longer than " + strconv.Itoa(MaxCodeLen) + " bytes"}
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; c <= ' ' || c > '~' {
			return &InputError{Field: field, Reason: "contains a space, a control character or a non-ASCII byte at offset " + strconv.Itoa(i)}
		}
	}
	return nil
}
