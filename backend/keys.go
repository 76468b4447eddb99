package backend

import (
	"fmt"
	"strings"
)

// The prefixes of Clerk's keys, which tell them apart.
const (
	secretKeyPrefix      = "sk_" // instance secret keys: sk_live_…, sk_test_…
	machineKeyPrefix     = "ak_" // machine secret keys
	publishableKeyPrefix = "pk_" // publishable keys: pk_live_…, pk_test_…
)

// CheckSecretKey refuses a value given as the instance secret key that is
// not one, saying what it looks like instead: the keys are easy to swap.
// An empty value is no key, and passes.
func CheckSecretKey(key string) error {
	return checkKey("secret_key", "an instance secret key", secretKeyPrefix, key)
}

// CheckMachineSecretKey refuses a value given as a machine secret key that
// is not one, as CheckSecretKey does.
func CheckMachineSecretKey(key string) error {
	return checkKey("machine_secret_key", "a machine secret key", machineKeyPrefix, key)
}

// checkKey refuses a key named name that does not start with prefix, and
// says which setting a key of another known prefix belongs in. The key
// itself is never repeated.
func checkKey(name, what, prefix, key string) error {
	if key == "" || strings.HasPrefix(key, prefix) {
		return nil
	}
	hint := ""
	switch {
	case strings.HasPrefix(key, secretKeyPrefix):
		hint = " (a key starting with sk_ is an instance secret key: set it as secret_key)"
	case strings.HasPrefix(key, machineKeyPrefix):
		hint = " (a key starting with ak_ is a machine secret key: set it as machine_secret_key)"
	case strings.HasPrefix(key, publishableKeyPrefix):
		hint = " (a key starting with pk_ is a publishable key, which is not secret: set it as publishable_key)"
	}
	return fmt.Errorf("%s must be %s starting with %s%s", name, what, prefix, hint)
}
