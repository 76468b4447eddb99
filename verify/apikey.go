package verify

import (
	"context"
	"strings"
)

// OrgIDPrefix starts the ids of Clerk organizations.
const OrgIDPrefix = "org_"

// verifyAPIKey asks Clerk about an API key (ak_…). The key stands for a
// user, an organization or a machine: its subject.
func (v *Verifier) verifyAPIKey(ctx context.Context, secret string) (*Identity, error) {
	answer, err := v.opts.Backend.VerifyAPIKey(ctx, secret)
	if err != nil {
		return nil, clerkFailure(APIKey, err)
	}
	expiresAt, claims, err := v.judge(APIKey, verdict{answer.Revoked, answer.Expired, answer.Expiration, answer.Claims})
	if err != nil {
		return nil, err
	}
	identity := &Identity{
		Subject:    answer.Subject,
		TokenType:  APIKey,
		Format:     Opaque,
		TokenID:    answer.ID,
		Scopes:     nonNil(answer.Scopes),
		ExpiresAt:  expiresAt,
		Name:       answer.Name,
		claimsJSON: claims,
	}
	if strings.HasPrefix(answer.Subject, OrgIDPrefix) {
		identity.OrgID = answer.Subject
	}
	return identity, nil
}
