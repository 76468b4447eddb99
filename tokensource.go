package clerkm2m

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/mint"
)

// tokenSource is a machine's token source, shared by the clerk_m2m_token
// handlers with the same settings, and the connections it mints over.
type tokenSource struct {
	sharers
	*mint.Source
	httpClient *http.Client
	logger     atomic.Pointer[zap.Logger]
	shortLived *alert                 // about tokens born near expiry
	declined   *alert                 // about live tokens Clerk handed back that outlive ttl
	machine    atomic.Pointer[string] // the tokens were last minted as
}

// tokenSourceSettings are what makes two handlers' token sources the same
// one: one per machine, Clerk API, token, renewal point and budget.
type tokenSourceSettings struct {
	APIURL           string                        `json:"api_url"`
	MachineSecretKey string                        `json:"machine_secret_key"`
	Token            backend.CreateM2MTokenOptions `json:"token"`
	RenewAt          float64                       `json:"renew_at"`
	Timeout          time.Duration                 `json:"timeout"`
}

// loadTokenSource returns the shared token source for s, making it on
// first use. It mints nothing.
func loadTokenSource(s tokenSourceSettings, counted bool, logger *zap.Logger) (*tokenSource, *lease, error) {
	return share("token_source", s, counted, func() (*tokenSource, error) {
		// One mint at a time (see mint.Source): the connections need no bound.
		src := &tokenSource{httpClient: backend.NewHTTPClient(0), shortLived: newAlert(), declined: newAlert()}
		src.logger.Store(logger)
		observe := func(attempt backend.Attempt) { src.observer().clerkRequest(attempt) }
		client, err := newMintClient(s.APIURL, s.MachineSecretKey, src.httpClient, observe)
		if err != nil {
			return nil, err
		}
		src.Source = mint.NewSource(announcingMinter{client, src.mintedAs}, mint.Options{
			Token:        s.Token,
			RenewAt:      s.RenewAt,
			Timeout:      s.Timeout,
			OnMint:       func(err error) { src.observer().mint(s.Token.Format, err) },
			OnShortLived: src.warnShortLived,
			OnDeclined:   func(expiresAt time.Time) { src.warnDeclined(s.Token, expiresAt) },
		})
		return src, nil
	})
}

// announcingMinter mints with a client of Clerk's API, and tells
// mintedAs the machine each token was minted as.
type announcingMinter struct {
	*backend.Client
	mintedAs func(machine string)
}

func (m announcingMinter) CreateM2MToken(ctx context.Context, opts backend.CreateM2MTokenOptions) (*backend.CreatedM2MToken, error) {
	created, err := m.Client.CreateM2MToken(ctx, opts)
	if err == nil && created != nil {
		m.mintedAs(created.Subject)
	}
	return created, err
}

// mintedAs says at INFO which machine the tokens are minted as, the first
// time and when it changes (the key was replaced): the machine of the key
// the handler was given, which calls with the tokens' authority.
func (s *tokenSource) mintedAs(machine string) {
	if last := s.machine.Swap(&machine); last == nil || *last != machine {
		s.logger.Load().Info("clerk_m2m_token mints M2M tokens as machine "+machine+", the machine of its machine_secret_key: "+
			"the requests it forwards call as that machine", zap.String("machine", machine))
	}
}

// start has the source log where the configuration that starts says: the
// previous one's logs may close.
func (s *tokenSource) start(logger *zap.Logger) { s.logger.Store(logger) }

// warnShortLived says, once a minute while it lasts, that Clerk's tokens
// come back with less life than asked, and what that costs.
func (s *tokenSource) warnShortLived(asked, got time.Duration) {
	s.shortLived.log(s.logger.Load(), "Clerk's M2M tokens come back with less life than asked (a clock out of step with Clerk's, "+
		"or a cap on their lifetime): each is used until it expires, and a new one minted at most once per "+
		mint.DefaultMintInterval.String(), zap.Duration("asked", asked), zap.Duration("got", got))
}

// warnDeclined says, once a minute while it lasts, that Clerk handed back
// for min_remaining_ttl a live token that outlives ttl, which was not used,
// and what that costs.
func (s *tokenSource) warnDeclined(token backend.CreateM2MTokenOptions, expiresAt time.Time) {
	expires := "never"
	if !expiresAt.IsZero() {
		expires = expiresAt.UTC().Format(time.RFC3339)
	}
	s.declined.log(s.logger.Load(), "for min_remaining_ttl, Clerk handed back a live M2M token of the machine that expires "+
		"later than ttl from now (minted elsewhere, with a longer ttl or none): it was not used, and a new token was minted, "+
		"one more billed mint each time",
		zap.Duration("ttl", time.Duration(token.SecondsUntilExpiration)*time.Second), zap.String("handed_back_expires", expires))
}

// Destruct stops a mint under way and closes the idle connections, when
// the last configuration using the source is unloaded.
func (s *tokenSource) Destruct() error {
	s.Close()
	s.httpClient.CloseIdleConnections()
	return nil
}
