FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOTOOPS_VAR_DIR=/app/var
WORKDIR /app
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN SECRET_KEY=build python manage.py collectstatic --noinput \
    && useradd --system --home /app lotoops && mkdir -p /app/var && chown lotoops /app/var
USER lotoops
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "lotoops.asgi:application", "--host=0.0.0.0", "--port=8000"]
