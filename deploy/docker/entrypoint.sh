#!/bin/sh
# Secrets arrive as files (compose `secrets:`, mounted under /run/secrets): for every
# URBANPULSE_*_FILE or PG*_FILE variable, export the variable without the suffix, read from
# the file, so no secret is ever in the image, the compose file or `docker inspect`.
set -eu
for name in $(env | sed -n 's/^\(\(URBANPULSE_\|PG\)[A-Z0-9_]*\)_FILE=.*/\1/p'); do
	eval "file=\${${name}_FILE}"
	if [ ! -r "$file" ]; then
		echo "entrypoint: ${name}_FILE names $file, which is not a readable file" >&2
		exit 2
	fi
	value=$(cat "$file")
	export "$name=$value"
	unset "${name}_FILE"
done
exec urbanpulse "$@"
