package backendtest_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// TestLoadCountsPeaksAndAbandonedRequests holds three verifications at the
// fake, gives up on two, and reads the load.
func TestLoadCountsPeaksAndAbandonedRequests(t *testing.T) {
	s := newServer(t)
	s.SetFault(backendtest.Fault{Path: "/m2m_tokens/verify", Delay: time.Hour})
	post := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/m2m_tokens/verify", strings.NewReader(`{"token":"mt_x"}`))
		require.NoError(t, err)
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req) // a connection each
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	ctx, giveUp := context.WithCancel(context.Background())
	var calls sync.WaitGroup
	for range 3 {
		calls.Go(func() { _ = post(ctx) })
	}
	require.Eventually(t, func() bool { return s.Load().Requests == 3 }, 5*time.Second, time.Millisecond)
	load := s.Load()
	assert.Equal(t, 3, load.PeakRequests)
	assert.Equal(t, 3, load.Connections)
	assert.Equal(t, 3, load.PeakConnections)

	giveUp()
	calls.Wait()
	require.Eventually(t, func() bool { return s.Load().Abandoned == 3 }, 5*time.Second, time.Millisecond,
		"the fake sees the calls end with their connections")
	load = s.Load()
	assert.Zero(t, load.Requests)
	assert.Zero(t, load.Connections, "the client closed them")
	assert.Equal(t, 3, load.PeakRequests, "the peak stays")

	s.ResetLoad()
	assert.Equal(t, backendtest.Load{}, s.Load())
}
