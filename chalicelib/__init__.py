"""GitLab-compatible error tracking on AWS Chalice and DynamoDB."""
