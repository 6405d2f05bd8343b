from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import views
from election_monitor.admin_login import login_throttled

app_name = "dashboard"

urlpatterns = [
    path("", views.elections_page, name="elections"),
    path("elections/<str:election_code>/", views.election_page, name="election"),
    path(
        "elections/<str:election_code>/constituencies/<str:constituency_code>/",
        views.constituency_page,
        name="constituency",
    ),
    # Throttled as the admin's login is (SPEC section 10): observers' accounts are accounts too.
    path("login/", login_throttled(auth_views.LoginView.as_view(template_name="dashboard/login.html")), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="dashboard:elections"), name="logout"),
]
