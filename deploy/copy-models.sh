#!/bin/sh
# Copy every model version under SOURCE (<name>/<version>/) into TARGET, the way the
# trainer publishes: each version is copied under a temporary name in its final folder,
# then renamed, so a service polling TARGET never sees half a version. Versions that
# TARGET already holds are kept as they are, so running this again changes nothing.
# Usage: copy-models SOURCE TARGET
set -eu
source=${1:?usage: copy-models SOURCE TARGET}
target=${2:?usage: copy-models SOURCE TARGET}
cd "$source"
for version in */*/; do
    version=${version%/}
    name=${version%/*}
    number=${version#*/}
    case $number in
        ''|*[!0-9]*) continue ;;  # only numbered version folders are published
    esac
    if [ -e "$target/$version" ]; then
        echo "kept: $target/$version"
        continue
    fi
    mkdir -p "$target/$name"
    staging="$target/$name/.tmp-copy-$number"
    rm -rf "$staging"
    cp -R "$version" "$staging"
    mv "$staging" "$target/$version"
    echo "published: $target/$version"
done
