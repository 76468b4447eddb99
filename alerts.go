package clerkm2m

import (
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"
)

// alertInterval is how often the same kind of trouble is logged: once per
// burst, not once per request.
const alertInterval = time.Minute

// alert logs one kind of trouble at most once per alertInterval, so that
// an outage under load does not flood the logs.
type alert struct{ sometimes rate.Sometimes }

func newAlert() *alert { return &alert{rate.Sometimes{First: 1, Interval: alertInterval}} }

// log writes msg at WARN, if this kind of trouble was not logged lately.
func (a *alert) log(logger *zap.Logger, msg string, fields ...zap.Field) {
	a.logAt(logger, zapcore.WarnLevel, msg, fields...)
}

func (a *alert) logAt(logger *zap.Logger, level zapcore.Level, msg string, fields ...zap.Field) {
	a.sometimes.Do(func() { logger.Log(level, msg+" (logged once a minute while it lasts)", fields...) })
}

// alerter is a handler's alerts: trouble with Clerk, calls to Clerk at
// their bound, a key Clerk rejects, trouble with the shared cache.
type alerter struct {
	logger                                *zap.Logger
	trouble, busy, misconfig, sharedCache *alert
}

func newAlerter(logger *zap.Logger) *alerter {
	return &alerter{logger: logger, trouble: newAlert(), busy: newAlert(), misconfig: newAlert(), sharedCache: newAlert()}
}

func (a *alerter) sharedCacheTrouble(op string, err error) {
	a.sharedCache.log(a.logger, "trouble with the shared cache of verdicts in the storage; credentials are verified with Clerk "+
		"meanwhile", zap.String("op", op), zap.Error(err))
}

func (a *alerter) callsLimited() {
	a.busy.log(a.logger, "calls to Clerk are at max_clerk_calls or max_clerk_rate, or a client at its share of them; "+
		"refusing credentials that need one more with 503", zap.String("reason", "clerk_calls_limited"))
}

func (a *alerter) clerkTrouble(what, reason string, err error) {
	a.trouble.log(a.logger, what, zap.String("reason", reason), zap.Error(err))
}

func (a *alerter) misconfigured(err error) {
	a.misconfig.logAt(a.logger, zapcore.ErrorLevel, "Clerk rejected the configured secret key; check secret_key and "+
		"machine_secret_key", zap.Error(err))
}
