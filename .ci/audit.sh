#!/usr/bin/env bash
# Audit the pinned dependencies (constraints.txt) for known vulnerabilities with pip-audit.
#
#   bash .ci/audit.sh            # report; exit 1 only if an advisory has a fixed version to move to
#   AUDIT_STRICT=0 bash .ci/audit.sh   # report only, always exit 0
#   AUDIT_SERVICE=osv bash .ci/audit.sh  # ask OSV instead of the PyPI JSON API
#
# Exit status: 0 when nothing fixable is known, when the only advisories have no fix yet (reported, not
# fatal), or when the vulnerability service cannot be reached (said loudly: nothing was audited then);
# 1 when at least one pinned package has an advisory with a fix version (upgrade the pin: `make lock`).
set -uo pipefail
cd "$(dirname "$0")/.."

PIP_AUDIT=${PIP_AUDIT:-.venv/bin/pip-audit}
PYTHON=${PYTHON:-.venv/bin/python}
SERVICE=${AUDIT_SERVICE:-pypi}
STRICT=${AUDIT_STRICT:-1}

if [ ! -x "$PIP_AUDIT" ]; then
    echo "audit: $PIP_AUDIT not found; install the dev extra (make install-test)" >&2
    exit 0
fi

report=$(mktemp)
errors=$(mktemp)
trap 'rm -f "$report" "$errors"' EXIT

# --no-deps --disable-pip: audit exactly the pins, without resolving or installing anything.
"$PIP_AUDIT" -r constraints.txt --no-deps --disable-pip --progress-spinner off \
    --vulnerability-service "$SERVICE" --format json --output "$report" 2>"$errors"
status=$?

"$PYTHON" - "$report" "$errors" "$status" "$STRICT" "$SERVICE" <<'EOF'
import json
import sys

report_path, errors_path, status, strict, service = sys.argv[1:6]
errors = open(errors_path, errors="replace").read()
try:
    report = json.load(open(report_path))
except (OSError, ValueError):
    print(f"audit: pip-audit produced no report (exit {status}); the {service} vulnerability service is "
          "probably unreachable from here. NOTHING WAS AUDITED.")
    print("\n".join(errors.strip().splitlines()[-5:]))
    sys.exit(0)

deps = report.get("dependencies", [])
skipped = [d for d in deps if "skip_reason" in d]
audited = [d for d in deps if "skip_reason" not in d]
print(f"audit: {len(audited)} of {len(deps)} pinned packages audited against {service}")
if deps and not audited:
    print(f"audit: every package was skipped ({skipped[0]['skip_reason']}); the {service} vulnerability "
          "service is unreachable or answers nothing from here. NOTHING WAS AUDITED.")
    sys.exit(0)
for dep in skipped:
    print(f"  skipped {dep['name']}: {dep['skip_reason']}")

fixable = 0
for dep in audited:
    for vuln in dep.get("vulns", []):
        fixes = vuln.get("fix_versions") or []
        aliases = ", ".join(vuln.get("aliases") or [])
        fix = f"fixed in {', '.join(fixes)}" if fixes else "no fix released"
        print(f"  {dep['name']}=={dep['version']}: {vuln['id']} ({aliases}) {fix}")
        summary = (vuln.get("description") or "").strip().splitlines()
        if summary:
            print(f"      {summary[0][:160]}")
        fixable += bool(fixes)
total = sum(len(d.get("vulns", [])) for d in audited)
print(f"audit: {total} advisories, {fixable} with a fix available")
if fixable and strict == "1":
    print("audit: FAIL: upgrade the pins above (pyproject.toml / make lock); AUDIT_STRICT=0 reports only")
    sys.exit(1)
sys.exit(0)
EOF
