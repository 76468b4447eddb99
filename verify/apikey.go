package verify

import (
	"context"
	"strings"
)

// APIKey is the type of API keys: long-lived keys (ak_…) Clerk issues to
// users, organizations or machines, verified by Clerk.
const APIKey TokenType = "api_key"

// orgIDPrefix starts the ids of organizations, which may own API keys.
const orgIDPrefix = "org_"

// verifyAPIKey asks Clerk about an API key (ak_…). The key stands for a
// user, an organization or a machine: its subject.
func (v *Verifier) verifyAPIKey(ctx context.Context, secret string) (*Identity, error) {
	answer, err := v.clerk.VerifyAPIKey(ctx, secret)
	if err != nil {
		return nil, clerkFailure(APIKey, err)
	}
	expiresAt, claims, err := v.judge(APIKey, verdict{answer.Revoked, answer.Expired, answer.Expiration, answer.Claims})
	if err != nil {
		return nil, err
	}
	identity := &Identity{
		Subject:    answer.Subject,
		TokenID:    answer.ID,
		Scopes:     nonNil(answer.Scopes),
		ExpiresAt:  expiresAt,
		Name:       answer.Name,
		claimsJSON: claims,
	}
	if strings.HasPrefix(answer.Subject, orgIDPrefix) {
		identity.OrgID = answer.Subject
	}
	return identity, nil
}
