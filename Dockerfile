# PotaFlow: one image for all three processes (web, worker, beat); the command picks the role.
#   web:    gunicorn potaflow.wsgi:application ... (the default CMD; access log with webhook tokens masked)
#   worker: celery -A potaflow worker -l info
#   beat:   celery -A potaflow beat -l info
# Python 3.11: Django 5.2 LTS supports it (Django 6.x would need 3.12+); see README "Dependencies".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POTAFLOW_VAR_DIR=/app/var \
    STATIC_ROOT=/app/staticfiles

RUN groupadd --system --gid 10001 potaflow \
    && useradd --system --uid 10001 --gid potaflow --home-dir /app --no-create-home --shell /usr/sbin/nologin potaflow

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt or constraints.txt changes.
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

COPY . .

# Static files are collected into the image (whitenoise serves them, hashed and
# compressed). settings refuse to load with DEBUG off and no SECRET_KEY, so this
# one step gets a throwaway value, set for this RUN only: it is neither an ARG
# nor an ENV, so it is not in the image's environment or metadata.
RUN SECRET_KEY=collectstatic-at-build-time-only DEBUG=false python manage.py collectstatic --noinput --verbosity 0 \
    && mkdir -p /app/var \
    && chown potaflow:potaflow /app/var

USER 10001:10001

EXPOSE 8000

# Healthy = the web process answers /healthz with 200 (database and broker reachable).
# docker-compose.yml overrides this for worker and beat, which serve no HTTP.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

CMD ["gunicorn", "potaflow.wsgi:application", "--config", "python:potaflow.gunicorn_config", "--logger-class", "potaflow.gunicorn_logging.RedactingLogger", "--bind", "0.0.0.0:8000", "--access-logfile", "-", "--graceful-timeout", "20"]
