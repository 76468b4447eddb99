package verify

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPolicy(t *testing.T) {
	id := &Identity{Subject: "mch_caller", TokenType: M2MToken, Scopes: []string{"mch_gateway", "mch_other"}}
	for name, tc := range map[string]struct {
		policy policy
		ok     bool
	}{
		"nothing required":          {policy{}, true},
		"the scope it has":          {policy{requireScopes: []string{"mch_gateway"}}, true},
		"all scopes it has":         {policy{requireScopes: []string{"mch_gateway", "mch_other"}}, true},
		"one scope missing":         {policy{requireScopes: []string{"mch_gateway", "mch_third"}}, false},
		"a prefix is not a scope":   {policy{requireScopes: []string{"mch_gate"}}, false},
		"allowed subject":           {policy{allowedSubjects: []string{"mch_x", "mch_caller"}}, true},
		"subject not allowed":       {policy{allowedSubjects: []string{"mch_x"}}, false},
		"both, subject not allowed": {policy{requireScopes: []string{"mch_gateway"}, allowedSubjects: []string{"mch_x"}}, false},
	} {
		err := tc.policy.check(id)
		if tc.ok {
			assert.NoError(t, err, name)
			continue
		}
		requireReason(t, err, ReasonInsufficientScope)
	}
}
