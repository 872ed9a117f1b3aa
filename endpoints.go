package wxphone

import "net/http"

// Operation names, as carried by the typed errors and the Hooks events:
// one per WeChat API wxphone calls (see endpoints).
const (
	OpPhoneNumber  = "getuserphonenumber"
	OpStableToken  = "stable_token"
	OpToken        = "token"
	OpCode2Session = "jscode2session"
	// OpAPIDomainIP is GET /cgi-bin/get_api_domain_ip, the cheap call
	// that needs a valid access token, used to check whether WeChat still
	// accepts a token before a force refresh is spent on it.
	OpAPIDomainIP = "get_api_domain_ip"
	// OpAPIQuota and OpRIDInfo are WeChat's management APIs (see
	// Client.APIQuota and Client.RIDInfo).
	OpAPIQuota = "quota_get"
	OpRIDInfo  = "rid_get"
)

// CGI paths of the WeChat APIs wxphone calls, as Client.APIQuota names
// them.
const (
	CGIPathPhoneNumber = "/wxa/business/getuserphonenumber"
	CGIPathStableToken = "/cgi-bin/stable_token" // #nosec G101 -- an API path, not a credential
	CGIPathToken       = "/cgi-bin/token"        // #nosec G101 -- an API path, not a credential
)

// endpoint is one WeChat API: its operation name, method and path below
// the base URL.
type endpoint struct {
	op, method, path string
}

// The WeChat APIs wxphone calls.
var (
	epPhoneNumber  = endpoint{OpPhoneNumber, http.MethodPost, CGIPathPhoneNumber}
	epStableToken  = endpoint{OpStableToken, http.MethodPost, CGIPathStableToken}
	epToken        = endpoint{OpToken, http.MethodGet, CGIPathToken}
	epCode2Session = endpoint{OpCode2Session, http.MethodGet, "/sns/jscode2session"}
	epAPIDomainIP  = endpoint{OpAPIDomainIP, http.MethodGet, "/cgi-bin/get_api_domain_ip"}
	epAPIQuota     = endpoint{OpAPIQuota, http.MethodPost, "/cgi-bin/openapi/quota/get"}
	epRIDInfo      = endpoint{OpRIDInfo, http.MethodPost, "/cgi-bin/openapi/rid/get"}
)
