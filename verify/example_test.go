package verify_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// A service that machines call verifies their M2M tokens: opaque ones with
// Clerk, JWTs locally with the instance's signing keys, which the secret
// key fetches. Here Clerk is the fake of backend/backendtest.
func Example() {
	clerk := backendtest.New() // in production: no APIURL, Clerk's own
	defer clerk.Close()
	service := clerk.NewMachine("invoices") // the machine this service runs as
	caller := clerk.NewMachine("billing")

	verifier, err := verify.New(verify.Options{
		Accept:        []verify.TokenType{verify.M2MToken},
		SecretKey:     clerk.SecretKey(),
		APIURL:        clerk.URL,
		RequireScopes: []string{service.ID}, // tokens granted to this service only
	})
	if err != nil {
		panic(err)
	}

	granted := backendtest.TokenOptions{Scopes: []string{service.ID}}
	opaque, _ := clerk.CreateM2MToken(caller, granted)
	request := httptest.NewRequest("GET", "/invoices", nil)
	request.Header.Set("Authorization", "Bearer "+opaque)
	identity, err := verifier.VerifyRequest(request)
	fmt.Println(identity.Subject == caller.ID, identity.TokenType, identity.Format, err)

	jwt := clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted})
	identity, err = verifier.Verify(context.Background(), jwt)
	fmt.Println(identity.Subject == caller.ID, identity.TokenType, identity.Format, err)

	elsewhere := clerk.MintM2MJWT(caller, backendtest.JWTOptions{})
	_, err = verifier.Verify(context.Background(), elsewhere)
	fmt.Println(verify.ReasonOf(err))

	_, err = verifier.VerifyRequest(httptest.NewRequest("GET", "/invoices", nil))
	fmt.Println(verify.ReasonOf(err))
	// Output:
	// true m2m_token opaque <nil>
	// true m2m_token jwt <nil>
	// insufficient_scope
	// token_missing
}
