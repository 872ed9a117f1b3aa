package wxphone

import (
	"strconv"

	"github.com/wxphone/wxphone/internal/valid"
)

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
	if i := valid.Unprintable(code); i >= 0 {
		return &InputError{Field: field, Reason: "contains a space, a control character or a non-ASCII byte at offset " + strconv.Itoa(i)}
	}
	return nil
}

// MaxOpenIDLen bounds PhoneRequest.OpenID (WeChat's openids are 28
// characters).
const MaxOpenIDLen = 128

// Validate checks r before any network call: its Code as ValidateCode
// does, and its OpenID, which is "" or up to MaxOpenIDLen printable ASCII
// bytes without spaces. The error never contains either.
func (r PhoneRequest) Validate() error {
	if err := ValidateCode(r.Code.Reveal()); err != nil {
		return err
	}
	switch {
	case len(r.OpenID) > MaxOpenIDLen:
		return &InputError{Field: "openid", Reason: "longer than " + strconv.Itoa(MaxOpenIDLen) + " bytes"}
	case !valid.Printable(r.OpenID):
		return &InputError{Field: "openid", Reason: "must be printable ASCII without spaces"}
	}
	return nil
}
