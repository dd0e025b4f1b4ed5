"""The admission webhook: HTTPS server, routes and AdmissionReview handling."""
