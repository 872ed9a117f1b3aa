package wxmock

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"
)

func domainIPURL(token string) string {
	return "/cgi-bin/get_api_domain_ip?access_token=" + url.QueryEscape(token)
}

// TestAPIDomainIP: get_api_domain_ip answers the address list for a token
// WeChat accepts, and the business-API token errors otherwise: it honours
// expiry, supersession (classic and force), revocation and faults.
func TestAPIDomainIP(t *testing.T) {
	s := newTestServer(t, nil)
	stable := stableToken(t, s, appA, secretA, false).AccessToken
	classic := classicToken(t, s, appB, secretB)

	check := func(name, method, target string, want int) {
		t.Helper()
		r := wx(t, s, method, target, "")
		if r.Errcode != want {
			t.Fatalf("%s: errcode %d, want %d (%s)", name, r.Errcode, want, r.body)
		}
		if want == 0 {
			var ips struct {
				IPList []string `json:"ip_list"`
			}
			if err := json.Unmarshal([]byte(r.body), &ips); err != nil || len(ips.IPList) == 0 {
				t.Fatalf("%s: body %s, want an ip_list", name, r.body)
			}
		}
	}
	check("stable token", http.MethodGet, domainIPURL(stable), 0)
	check("classic token", http.MethodGet, domainIPURL(classic), 0)
	check("unknown token", http.MethodGet, domainIPURL("not-a-token"), 40001)
	check("no token", http.MethodGet, "/cgi-bin/get_api_domain_ip", 41001)
	check("POST", http.MethodPost, domainIPURL(stable), 43001)

	// A classic fetch supersedes the previous classic token after the
	// five-minute overlap.
	_ = classicToken(t, s, appB, secretB)
	check("superseded classic, within the overlap", http.MethodGet, domainIPURL(classic), 0)
	s.Advance(TokenOverlap)
	check("superseded classic, after the overlap", http.MethodGet, domainIPURL(classic), 40001)

	// Faults apply to the endpoint, by name, by "*" and by the token's app.
	id, err := s.AddFault(Fault{Endpoint: EndpointAPIDomainIP, Kind: FaultErrcode, Errcode: -1, Count: 1})
	if err != nil || id == "" {
		t.Fatal(err)
	}
	check("errcode fault", http.MethodGet, domainIPURL(stable), -1)
	check("fault used up", http.MethodGet, domainIPURL(stable), 0)
	if _, err := s.AddFault(Fault{Endpoint: EndpointAll, AppID: appB, Kind: FaultErrcode, Errcode: 40001}); err != nil {
		t.Fatal(err)
	}
	check("fault for another app", http.MethodGet, domainIPURL(stable), 0)
	s.ClearFaults()

	// Force refresh invalidates every stable token at once; revocation too.
	s.Advance(time.Minute)
	forced := stableToken(t, s, appA, secretA, true).AccessToken
	check("stable token after a force refresh", http.MethodGet, domainIPURL(stable), 40001)
	check("forced token", http.MethodGet, domainIPURL(forced), 0)
	if _, err := s.RevokeTokens(appA); err != nil {
		t.Fatal(err)
	}
	check("revoked", http.MethodGet, domainIPURL(forced), 40001)

	// Expiry.
	fresh := stableToken(t, s, appA, secretA, false).AccessToken
	s.Advance(2 * time.Hour)
	check("expired", http.MethodGet, domainIPURL(fresh), 42001)

	st := s.Stats().Endpoints.APIDomainIP
	if st.Calls != 14 || st.ByErrcode[0] != 6 || st.ByErrcode[-1] != 1 {
		t.Errorf("stats = %+v", st)
	}
}
