"""`python -m flows` (what `mim serve` runs): serve every deployment of the project in `MIM_PROJECT_DIR` (else the
working directory) against `PREFECT_API_URL`; blocks."""

from flows.serve import serve_all

serve_all()
