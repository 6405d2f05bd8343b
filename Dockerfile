# The one image behind web, worker, beat and migrate in docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Requirements first, so a code change does not reinstall them.
COPY requirements.txt /app/requirements.txt
RUN pip install -r /app/requirements.txt

COPY . /app

# Static files (admin, browsable API, Swagger UI) into STATIC_ROOT=/app/staticfiles, served
# by WhiteNoise from gunicorn. The key is a placeholder that lives only in this build step.
RUN DEBUG=0 SECRET_KEY=collectstatic-build-step-only python manage.py collectstatic --noinput

RUN useradd --system --uid 10001 --home-dir /app --no-create-home app
USER app

EXPOSE 8000
CMD ["gunicorn", "election_monitor.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
